/**
 * Pooling and nearest-neighbour upsampling over NCHW planes. Every kernel writes each of its
 * outputs from one invocation, and every backward is a gather (each input element sums the
 * output gradients that reach it), so no atomics are needed and results are deterministic.
 *
 * Window (oh, ow) of a k×k pool with stride s and padding p covers input rows
 * oh·s − p .. oh·s − p + k − 1 (likewise columns); padded positions are skipped (max) or count
 * as zeros (avg: divisor k², PyTorch's count_include_pad). Input row ih is therefore covered by
 * windows oh = ceil((ih + p − k + 1) / s) .. floor((ih + p) / s), clamped to the output.
 *
 * `texture`: the kernel reads its float input (x forward, dy backward) from an operand texture
 * (src/device/operand_textures.ts; CPU adapters: a gather instead of a per-lane storage loop).
 */
import { wgsl } from "wgsl-preprocessor";
import { fastDivision, flatIndex, isNanWgsl, memoizeShader, readOperand, WORKGROUP_1D } from "./common.ts";

export type PoolKind = "max" | "avg";

const poolParams = /* wgsl */ `
struct Params {
  total: u32,  // elements of the tensor this kernel writes
  height: u32, width: u32,
  out_height: u32, out_width: u32,
  kernel: u32, stride: u32, padding: u32,
  inv_area: f32, // 1 / k²
}`;

/** Binding 0, the kernel's float input `name`, and its `load_<name>(u)` (see `readOperand`). */
function input0(name: string, texture: boolean): string {
  const operand = readOperand(name, false, texture);
  return `@group(0) @binding(0) ${operand.decl};\n${operand.loader}`;
}

/**
 * Forward, one invocation per output element. Max also records the argmax (index h·W + w in
 * its plane; the first maximum in row-major order on ties; NaN wins, as in PyTorch) when
 * `withIndices`, for the backward. Bindings: x, out, [indices], params.
 */
export const pool2dShader = memoizeShader(generatePool2dShader);

function generatePool2dShader(kind: PoolKind, withIndices: boolean, texture: boolean): string {
  const max = kind === "max";
  return wgsl`
${flatIndex}
${poolParams}
${input0("x", texture)}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
#if ${withIndices}
@group(0) @binding(2) var<storage, read_write> indices: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;
#else
@group(0) @binding(2) var<uniform> p: Params;
#endif

${isNanWgsl}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);
  if (o >= p.total) { return; }
  let ow = o % p.out_width;
  let oh = (o / p.out_width) % p.out_height;
  let plane = o / (p.out_width * p.out_height);
  let base = plane * p.height * p.width;
  let h0 = i32(oh * p.stride) - i32(p.padding);
  let w0 = i32(ow * p.stride) - i32(p.padding);
#if ${max}
  var best = 0.0;
  var best_at = -1;
#else
  var acc = 0.0;
#endif
  for (var kh = 0; kh < i32(p.kernel); kh++) {
    let h = h0 + kh;
    if (h < 0 || h >= i32(p.height)) { continue; }
    for (var kw = 0; kw < i32(p.kernel); kw++) {
      let w = w0 + kw;
      if (w < 0 || w >= i32(p.width)) { continue; }
      let at = h * i32(p.width) + w;
      let v = load_x(base + u32(at));
#if ${max}
      if (best_at < 0 || v > best || (is_nan(v) && !is_nan(best))) {
        best = v;
        best_at = at;
      }
#else
      acc += v;
#endif
    }
  }
#if ${max}
  out[o] = best;
#if ${withIndices}
  indices[o] = best_at;
#endif
#else
  out[o] = acc * p.inv_area;
#endif
}`;
}

/**
 * Backward, one invocation per input element: sums dy over the windows that cover it
 * (max: only those whose argmax it is; avg: each times 1/k²). Bindings: dy, [indices], dx, params.
 */
export const pool2dBackwardShader = memoizeShader(generatePool2dBackwardShader);

function generatePool2dBackwardShader(kind: PoolKind, texture: boolean): string {
  const max = kind === "max";
  return wgsl`
${flatIndex}
${poolParams}
${input0("dy", texture)}
#if ${max}
@group(0) @binding(1) var<storage, read> indices: array<i32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
#else
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
#endif

// Output positions whose windows cover input position i (ceil/floor division, clamped).
fn first_window(i: i32) -> i32 {
  let a = i + i32(p.padding) - i32(p.kernel) + 1;
  return select(0, (a + i32(p.stride) - 1) / i32(p.stride), a > 0);
}
fn last_window(i: i32, count: u32) -> i32 {
  return min((i + i32(p.padding)) / i32(p.stride), i32(count) - 1);
}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  let iw = i32(i % p.width);
  let ih = i32((i / p.width) % p.height);
  let plane = i / (p.width * p.height);
  let base = plane * p.out_height * p.out_width;
  let here = ih * i32(p.width) + iw;
  var acc = 0.0;
  for (var oh = first_window(ih); oh <= last_window(ih, p.out_height); oh++) {
    for (var ow = first_window(iw); ow <= last_window(iw, p.out_width); ow++) {
      let o = base + u32(oh) * p.out_width + u32(ow);
#if ${max}
      if (indices[o] == here) { acc += load_dy(o); }
#else
      acc += load_dy(o);
#endif
    }
  }
#if ${max}
  dx[i] = acc;
#else
  dx[i] = acc * p.inv_area;
#endif
}`;
}

/** Mean of each plane: out[plane] = Σ x[plane, :] / (H·W). Bindings: x, out, params. */
export const globalAvgPoolShader = memoizeShader((texture: boolean) => /* wgsl */ `
${flatIndex}
struct Params { planes: u32, plane_size: u32, inv_size: f32 }
${input0("x", texture)}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let plane = flat_index(gid, nwg);
  if (plane >= p.planes) { return; }
  let base = plane * p.plane_size;
  var acc = 0.0;
  for (var i = 0u; i < p.plane_size; i++) { acc += load_x(base + i); }
  out[plane] = acc * p.inv_size;
}`);

/**
 * Global average pool backward: dx[plane, i] = dy[plane] / (H·W). Bindings: dy, dx, params.
 * One invocation per `width` elements (4: a vec4 store, when H·W is a multiple of 4), whose
 * plane is found by a multiply-shift (`div_magic`): an integer division by a runtime value is
 * a slow per-lane loop on llvmpipe.
 */
export const globalAvgPoolBackwardShader = memoizeShader((width: 1 | 4, texture: boolean) => /* wgsl */ `
${flatIndex}
${fastDivision}
struct Params { total: u32, inv_size: f32, magic: vec2<u32> }
${input0("dy", texture)}
@group(0) @binding(1) var<storage, read_write> dx: array<${width === 4 ? "vec4<f32>" : "f32"}>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  dx[i] = ${width === 4 ? "vec4<f32>" : "f32"}(load_dy(div_magic(i, p.magic)) * p.inv_size);
}`);

/**
 * Uniform block of the upsampling kernels (total = input elements, height and width the
 * input's), and where input element i's s×s output block starts. Plain integer divisions:
 * multiply-shifts (`div_magic`) measured 1.5x slower in the forward pass on lavapipe (AMD Zen 3).
 */
const upsampleCommon = /* wgsl */ `
${flatIndex}
struct Params { total: u32, height: u32, width: u32, scale: u32 }

fn block_start(i: u32) -> u32 {
  let iw = i % p.width;
  let ih = (i / p.width) % p.height;
  let plane = i / (p.width * p.height);
  return (plane * p.height * p.scale + ih * p.scale) * p.width * p.scale + iw * p.scale;
}`;

/**
 * Nearest-neighbour upsampling by an integer factor s: out[oh, ow] = x[oh / s, ow / s]
 * (PyTorch's mode="nearest" with scale_factor = s). One invocation per INPUT element, which
 * writes its s×s block: a quarter of the index math of one invocation per output (measured 2-3x
 * faster on llvmpipe). Bindings: x, out, params.
 */
export const upsampleNearestShader = memoizeShader((texture: boolean) => /* wgsl */ `
${input0("x", texture)}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${upsampleCommon}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  let first = block_start(i);
  let out_width = p.width * p.scale;
  let value = load_x(i);
  for (var a = 0u; a < p.scale; a++) {
    for (var b = 0u; b < p.scale; b++) { out[first + a * out_width + b] = value; }
  }
}`);

/**
 * Upsampling backward: each input element sums its s×s block of dy. One invocation per input
 * element. Bindings: dy, dx, params.
 */
export const upsampleNearestBackwardShader = memoizeShader((texture: boolean) => /* wgsl */ `
${input0("dy", texture)}
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${upsampleCommon}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  let first = block_start(i);
  let out_width = p.width * p.scale;
  var acc = 0.0;
  for (var a = 0u; a < p.scale; a++) {
    for (var b = 0u; b < p.scale; b++) { acc += load_dy(first + a * out_width + b); }
  }
  dx[i] = acc;
}`);
