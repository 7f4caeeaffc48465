/**
 * The gated activation of a gated convolution (Yu et al. 2019), fused into one pass:
 *
 *   conv output y [N, 2C, H, W] = (features a | gates b) along channels
 *   out[n, c, p] = ELU(a) · σ(b),  a = y[n, c, p], b = y[n, C + c, p]
 *
 * and its gradient, which writes both halves of dy from one read of y and dout:
 *
 *   ∂out/∂a = σ(b) · ELU'(a),  ELU'(a) = 1 for a > 0, e^a otherwise (alpha 1)
 *   ∂out/∂b = ELU(a) · σ(b) (1 − σ(b))
 *
 * Unfused, the same math takes split (2 copies), ELU, sigmoid and a product forward, and their
 * five gradients plus two zero-padded slice gradients and an add backward: ~7x the traffic.
 * `vec4`: a plane (H·W) holds a multiple of 4 elements, so four neighbours share n and c.
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";

const header = (vec4: boolean) => {
  const T = vec4 ? "vec4<f32>" : "f32";
  return /* wgsl */ `
${flatIndex}
// units: elements of the output (vec4s when vec4); plane: units per (n, c); channels: C.
struct Params { units: u32, plane: u32, channels: u32, _pad: u32 }

fn elu(a: ${T}) -> ${T} { return select(exp(a) - 1.0, a, a > ${T}(0.0)); }
// 1 / (1 + e^-b): e^-b = inf saturates to 0, not NaN.
fn sigmoid(b: ${T}) -> ${T} { return 1.0 / (1.0 + exp(-b)); }
// Index of the feature a of output unit i; its gate b is one half (channels planes) further.
fn feature_index(i: u32) -> u32 {
  let half = p.channels * p.plane;
  return (i / half) * 2u * half + i % half;
}`;
};

export function gatedActivationShader(vec4: boolean): string {
  const T = vec4 ? "vec4<f32>" : "f32";
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> y: array<${T}>;
@group(0) @binding(1) var<storage, read_write> out: array<${T}>;
@group(0) @binding(2) var<uniform> p: Params;
${header(vec4)}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.units) { return; }
  let ia = feature_index(i);
  out[i] = elu(y[ia]) * sigmoid(y[ia + p.channels * p.plane]);
}`;
}

export function gatedActivationBackwardShader(vec4: boolean): string {
  const T = vec4 ? "vec4<f32>" : "f32";
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> y: array<${T}>;
@group(0) @binding(1) var<storage, read> dout: array<${T}>;
@group(0) @binding(2) var<storage, read_write> dy: array<${T}>;
@group(0) @binding(3) var<uniform> p: Params;
${header(vec4)}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.units) { return; }
  let ia = feature_index(i);
  let ib = ia + p.channels * p.plane;
  let a = y[ia];
  let s = sigmoid(y[ib]);
  let g = dout[i];
  dy[ia] = g * s * select(exp(a), ${T}(1.0), a > ${T}(0.0));
  dy[ib] = g * elu(a) * s * (1.0 - s);
}`;
}
