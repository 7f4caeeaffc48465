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
import { flatIndex, readOperand, WORKGROUP_1D } from "./common.ts";

/**
 * One kernel of the pair: read-only `inputs` (read with load_<name>(index), from storage buffers
 * of element type T or, with `textures`, from operand textures: src/device/operand_textures.ts),
 * `outputs` (storage), then the Params uniform; a `body` run per output unit i with ia / ib,
 * the indices of its feature and gate.
 */
function gatedKernel(
  vec4: boolean,
  textures: boolean,
  inputs: string[],
  outputs: string[],
  body: string,
): string {
  const T = vec4 ? "vec4<f32>" : "f32";
  const reads = inputs.map((name) => readOperand(name, vec4, textures));
  const declarations = [
    ...reads.map((r) => r.decl),
    ...outputs.map((name) => `var<storage, read_write> ${name}: array<${T}>`),
  ].map((d, i) => `@group(0) @binding(${i}) ${d};`);
  const loaders = reads.map((r) => r.loader);
  return /* wgsl */ `
${flatIndex}
// units: elements of the output (vec4s when vec4); plane: units per (n, c); channels: C.
struct Params { units: u32, plane: u32, channels: u32, _pad: u32 }
${declarations.join("\n")}
@group(0) @binding(${declarations.length}) var<uniform> p: Params;
${loaders.join("\n")}

fn elu(a: ${T}) -> ${T} { return select(exp(a) - 1.0, a, a > ${T}(0.0)); }
// 1 / (1 + e^-b): e^-b = inf saturates to 0, not NaN.
fn sigmoid(b: ${T}) -> ${T} { return 1.0 / (1.0 + exp(-b)); }

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.units) { return; }
  // Unit i of the output is (n, c, q): its feature is y[n, c, q], its gate C planes further.
  let half = p.channels * p.plane;
  let ia = (i / half) * 2u * half + i % half;
  let ib = ia + half;
  ${body}
}`;
}

export function gatedActivationShader(vec4: boolean, textures = false): string {
  return gatedKernel(vec4, textures, ["y"], ["out"], "out[i] = elu(load_y(ia)) * sigmoid(load_y(ib));");
}

export function gatedActivationBackwardShader(vec4: boolean, textures = false): string {
  const T = vec4 ? "vec4<f32>" : "f32";
  return gatedKernel(
    vec4,
    textures,
    ["y", "dout"],
    ["dy"],
    /* wgsl */ `let a = load_y(ia);
  let s = sigmoid(load_y(ib));
  let g = load_dout(i);
  dy[ia] = g * s * select(exp(a), ${T}(1.0), a > ${T}(0.0));
  dy[ib] = g * elu(a) * s * (1.0 - s);`,
  );
}
