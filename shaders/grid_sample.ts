/**
 * Bilinear grid sampling (torch.nn.functional.grid_sample, mode "bilinear", padding "zeros",
 * align_corners = false) and the flow-smoothness loss of StAdv.
 *
 * Output pixel (n, c, ho, wo) samples x[n, c] at the grid point g = grid[n, ho, wo] = (gx, gy),
 * in normalised coordinates where −1 and 1 are the outer edges of the image, so pixel centres
 * sit at (2i + 1)/W − 1. In pixel units:
 *     ix = ((gx + 1)·W − 1) / 2,   iy = ((gy + 1)·H − 1) / 2,
 * and with x0 = floor(ix), fx = ix − x0 (likewise y0, fy) the sample is
 *     out = (1−fy)(1−fx)·x[y0, x0] + (1−fy)fx·x[y0, x0+1] + fy(1−fx)·x[y0+1, x0] + fy·fx·x[y0+1, x0+1],
 * where taps outside the image read 0 ("zeros" padding).
 *
 * Gradients:
 *  - w.r.t. the grid (one invocation per grid point, summing over channels):
 *        d out/d ix = (1−fy)(x[y0,x0+1] − x[y0,x0]) + fy(x[y0+1,x0+1] − x[y0+1,x0]),  d ix/d gx = W/2,
 *    and symmetrically for iy (piecewise linear: at integer ix the right-hand derivative, like torch).
 *  - w.r.t. x: every output scatters into 4 input pixels. To stay deterministic without float
 *    atomics, each input pixel GATHERS instead: it visits the outputs whose sample point could
 *    fall within one pixel of it and adds dy·weight in a fixed order. Which outputs can? Let
 *    d = ix − ix_id be a sample's displacement from its "identity" position
 *    ix_id = (wo + ½)·W/Wo − ½ (likewise rows). If every displacement of image n lies in
 *    [d_lo, d_hi], pixel w is reached (|ix − w| < 1) only by outputs with
 *    ix_id ∈ (w − 1 − d_hi, w + 1 − d_lo): a window of about d_hi − d_lo + 2 outputs per axis, so
 *    small for smooth flows (StAdv), translations of any length and small affine jitter, and the
 *    whole grid only for wild ones. [d_lo, d_hi] per image and axis comes from
 *    `gridDisplacementShader` + a min and a max reduction, read by the gather at run time (no
 *    readback).
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";

const gridParams = /* wgsl */ `
struct Params {
  total: u32,        // invocations of this dispatch
  channels: u32,
  height: u32, width: u32,          // input
  out_height: u32, out_width: u32,  // grid / output
  row_begin: u32, row_end: u32,     // dx only: output rows gathered by this pass
  accumulate: u32,                  // dx only: 1 = add to dx (later passes), 0 = overwrite
}`;

/**
 * Pixel coordinates of a grid point, clamped to [−2, size + 1]: points beyond touch no pixel
 * either way, and the clamp keeps floor() and the i32 conversion finite.
 */
const unnormalize = /* wgsl */ `
fn unnormalize(g: f32, size: u32) -> f32 {
  let s = f32(size);
  return clamp(((g + 1.0) * s - 1.0) * 0.5, -2.0, s + 1.0);
}`;

const readX = /* wgsl */ `
// x[plane, yy, xx], or 0 outside the image (zero padding).
fn tap(plane: u32, yy: i32, xx: i32) -> f32 {
  if (yy < 0 || xx < 0 || yy >= i32(p.height) || xx >= i32(p.width)) { return 0.0; }
  return x[(plane * p.height + u32(yy)) * p.width + u32(xx)];
}`;

/** Forward, one invocation per output element. Bindings: x, grid, out, params. */
export const gridSampleShader = /* wgsl */ `
${flatIndex}
${gridParams}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> grid: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${unnormalize}
${readX}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);
  if (o >= p.total) { return; }
  let points = p.out_height * p.out_width;
  let point = o % points;          // ho·Wo + wo
  let plane = o / points;          // n·C + c
  let n = plane / p.channels;
  let g = (n * points + point) * 2u;
  let ix = unnormalize(grid[g], p.width);
  let iy = unnormalize(grid[g + 1u], p.height);
  let fx0 = floor(ix);
  let fy0 = floor(iy);
  let fx = ix - fx0;
  let fy = iy - fy0;
  let x0 = i32(fx0);
  let y0 = i32(fy0);
  let top = (1.0 - fx) * tap(plane, y0, x0) + fx * tap(plane, y0, x0 + 1);
  let bottom = (1.0 - fx) * tap(plane, y0 + 1, x0) + fx * tap(plane, y0 + 1, x0 + 1);
  out[o] = (1.0 - fy) * top + fy * bottom;
}`;

/**
 * Gradient w.r.t. the grid, one invocation per grid point (loops over channels).
 * Bindings: x, grid, dy, dgrid, params.
 */
export const gridSampleGridBackwardShader = /* wgsl */ `
${flatIndex}
${gridParams}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> grid: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dgrid: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
${unnormalize}
${readX}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);   // n·Ho·Wo + point
  if (o >= p.total) { return; }
  let points = p.out_height * p.out_width;
  let point = o % points;
  let n = o / points;
  let ix = unnormalize(grid[2u * o], p.width);
  let iy = unnormalize(grid[2u * o + 1u], p.height);
  let fx0 = floor(ix);
  let fy0 = floor(iy);
  let fx = ix - fx0;
  let fy = iy - fy0;
  let x0 = i32(fx0);
  let y0 = i32(fy0);
  var d_ix = 0.0;
  var d_iy = 0.0;
  for (var c = 0u; c < p.channels; c++) {
    let plane = n * p.channels + c;
    let g = dy[plane * points + point];
    let v00 = tap(plane, y0, x0);
    let v01 = tap(plane, y0, x0 + 1);
    let v10 = tap(plane, y0 + 1, x0);
    let v11 = tap(plane, y0 + 1, x0 + 1);
    d_ix += g * ((1.0 - fy) * (v01 - v00) + fy * (v11 - v10));
    d_iy += g * ((1.0 - fx) * (v10 - v00) + fx * (v11 - v01));
  }
  // Chain rule through ix = ((gx + 1)·W − 1)/2; the clamp in unnormalize only bites where
  // every tap is outside the image, and there d_ix = d_iy = 0 already.
  dgrid[2u * o] = d_ix * 0.5 * f32(p.width);
  dgrid[2u * o + 1u] = d_iy * 0.5 * f32(p.height);
}`;

/**
 * Per grid point, its signed displacement d = (ix − ix_id, iy − iy_id) in input pixels, written
 * twice: into `upper` for a max reduction and `lower` for a min reduction, where points that touch
 * no pixel (they contribute nothing) are −3e38 and +3e38, so they never set a bound.
 * Bindings: grid, upper, lower, params.
 */
export const gridDisplacementShader = /* wgsl */ `
${flatIndex}
${gridParams}
@group(0) @binding(0) var<storage, read> grid: array<f32>;
@group(0) @binding(1) var<storage, read_write> upper: array<f32>;
@group(0) @binding(2) var<storage, read_write> lower: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${unnormalize}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);
  if (o >= p.total) { return; }
  let point = o % (p.out_height * p.out_width);
  let wo = point % p.out_width;
  let ho = point / p.out_width;
  let ix = unnormalize(grid[2u * o], p.width);
  let iy = unnormalize(grid[2u * o + 1u], p.height);
  let touches = ix > -1.0 && ix < f32(p.width) && iy > -1.0 && iy < f32(p.height);
  let dx = ix - ((f32(wo) + 0.5) * f32(p.width) / f32(p.out_width) - 0.5);
  let dy = iy - ((f32(ho) + 0.5) * f32(p.height) / f32(p.out_height) - 0.5);
  upper[2u * o] = select(-3e38, dx, touches);
  upper[2u * o + 1u] = select(-3e38, dy, touches);
  lower[2u * o] = select(3e38, dx, touches);
  lower[2u * o + 1u] = select(3e38, dy, touches);
}`;

/**
 * Gradient w.r.t. x as a gather. One invocation per (n, group of 4 channels, h, w): the bilinear
 * weight of each candidate output is computed once and applied to 4 channels (vec4).
 * Candidates: output rows/columns whose identity position lies in (q − 1 − d_hi, q + 1 − d_lo),
 * widened to whole outputs by floor/ceil (which also absorbs f32 rounding), intersected with this
 * pass's rows [row_begin, row_end) (on CPU adapters the rows are split into passes so no
 * invocation loops more than CPU_ADAPTER_MAX_LOOP times).
 * Bindings: grid, dy, d_hi [N, 2], d_lo [N, 2], dx, params.
 */
export const gridSampleInputBackwardShader = /* wgsl */ `
${flatIndex}
${gridParams}
@group(0) @binding(0) var<storage, read> grid: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> d_hi: array<f32>;
@group(0) @binding(3) var<storage, read> d_lo: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
${unnormalize}

// Weight of integer position q in the linear interpolation at s (0 unless q is floor(s) or floor(s) + 1).
fn hat(s: f32, q: i32) -> f32 {
  let s0 = floor(s);
  let f = s - s0;
  let k = q - i32(s0);
  return select(select(0.0, f, k == 1), 1.0 - f, k == 0);
}

// Output index range [first, last] (clamped; empty when first > last) of the candidates for
// input position q, given the image's displacement bounds along this axis. The bounds are clamped
// to what a (clamped) sample can reach, which also turns "no sample touches the image" (±3e38)
// into an empty window.
fn candidates(q: u32, hi_in: f32, lo_in: f32, size: u32, out_size: u32) -> vec2<i32> {
  let far = f32(size) + 3.0;
  let hi = clamp(hi_in, -far, far);
  let lo = clamp(lo_in, -far, far);
  let scale = f32(out_size) / f32(size);
  // ix_id = (wo + ½)/scale − ½  <=>  wo = (ix_id + ½)·scale − ½
  let first = i32(floor((f32(q) - 1.0 - hi + 0.5) * scale - 0.5));
  let last = i32(ceil((f32(q) + 1.0 - lo + 0.5) * scale - 0.5));
  return vec2<i32>(max(first, 0), min(last, i32(out_size) - 1));
}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);
  if (o >= p.total) { return; }
  let pixels = p.height * p.width;
  let pixel = o % pixels;
  let w = pixel % p.width;
  let h = pixel / p.width;
  let groups = (p.channels + 3u) / 4u;
  let c0 = ((o / pixels) % groups) * 4u;
  let n = o / (pixels * groups);
  let points = p.out_height * p.out_width;
  let rows = candidates(h, d_hi[2u * n + 1u], d_lo[2u * n + 1u], p.height, p.out_height);
  let cols = candidates(w, d_hi[2u * n], d_lo[2u * n], p.width, p.out_width);
  let row_lo = max(rows.x, i32(p.row_begin));
  let row_hi = min(rows.y, i32(p.row_end) - 1);
  var acc = vec4<f32>(0.0);
  for (var ho = row_lo; ho <= row_hi; ho++) {
    for (var wo = cols.x; wo <= cols.y; wo++) {
      let point = u32(ho) * p.out_width + u32(wo);
      let g = (n * points + point) * 2u;
      let weight = hat(unnormalize(grid[g], p.width), i32(w)) * hat(unnormalize(grid[g + 1u], p.height), i32(h));
      if (weight != 0.0) {
        let base = (n * p.channels + c0) * points + point;
        var v = vec4<f32>(dy[base], 0.0, 0.0, 0.0);
        if (c0 + 1u < p.channels) { v.y = dy[base + points]; }
        if (c0 + 2u < p.channels) { v.z = dy[base + 2u * points]; }
        if (c0 + 3u < p.channels) { v.w = dy[base + 3u * points]; }
        acc += weight * v;
      }
    }
  }
  let out = (n * p.channels + c0) * pixels + pixel;
  for (var k = 0u; k < 4u; k++) {
    if (c0 + k < p.channels) {
      let i = out + k * pixels;
      dx[i] = select(acc[k], dx[i] + acc[k], p.accumulate == 1u);
    }
  }
}`;

/** identity grid [N, H, W, 2]: (gx, gy) = ((2w + 1)/W − 1, (2h + 1)/H − 1). Bindings: out, params. */
export const identityGridShader = /* wgsl */ `
${flatIndex}
struct Params { total: u32, height: u32, width: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);
  if (o >= p.total) { return; }
  let axis = o % 2u;               // 0: x (column), 1: y (row)
  let pixel = (o / 2u) % (p.height * p.width);
  let size = select(p.width, p.height, axis == 1u);
  let i = select(pixel % p.width, pixel / p.width, axis == 1u);
  out[o] = f32(2u * i + 1u) / f32(size) - 1.0;
}`;

const flowParams = /* wgsl */ `
struct Params { total: u32, height: u32, width: u32 }`;

/**
 * Flow smoothness, one invocation per pixel p of flow [N, H, W, 2]: the sum over its 4
 * neighbours q inside the image of sqrt(‖flow(p) − flow(q)‖² + 1e-10) (each neighbouring pair is
 * thus counted from both sides). A sum over the pixels then gives the per-sample loss.
 * Bindings: flow, terms, params.
 */
export const flowSmoothnessShader = /* wgsl */ `
${flatIndex}
${flowParams}
@group(0) @binding(0) var<storage, read> flow: array<f32>;
@group(0) @binding(1) var<storage, read_write> terms: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

fn at(i: u32) -> vec2<f32> { return vec2<f32>(flow[2u * i], flow[2u * i + 1u]); }

fn term(a: vec2<f32>, q: u32) -> f32 {
  let d = a - at(q);
  return sqrt(dot(d, d) + 1e-10);
}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);
  if (o >= p.total) { return; }
  let w = o % p.width;
  let h = (o / p.width) % p.height;
  let a = at(o);
  var s = 0.0;
  if (w > 0u) { s += term(a, o - 1u); }
  if (w + 1u < p.width) { s += term(a, o + 1u); }
  if (h > 0u) { s += term(a, o - p.width); }
  if (h + 1u < p.height) { s += term(a, o + p.width); }
  terms[o] = s;
}`;

/**
 * Its gradient: pair {p, q} appears twice (from p and from q), so
 *     d loss / d flow(p) = dy[n] · Σ_q 2 (flow(p) − flow(q)) / sqrt(‖flow(p) − flow(q)‖² + 1e-10).
 * Bindings: flow, dy [N], dflow, params.
 */
export const flowSmoothnessBackwardShader = /* wgsl */ `
${flatIndex}
${flowParams}
@group(0) @binding(0) var<storage, read> flow: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dflow: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

fn at(i: u32) -> vec2<f32> { return vec2<f32>(flow[2u * i], flow[2u * i + 1u]); }

fn pull(a: vec2<f32>, q: u32) -> vec2<f32> {
  let d = a - at(q);
  return 2.0 * d / sqrt(dot(d, d) + 1e-10);
}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);
  if (o >= p.total) { return; }
  let w = o % p.width;
  let h = (o / p.width) % p.height;
  let n = o / (p.width * p.height);
  let a = at(o);
  var g = vec2<f32>(0.0);
  if (w > 0u) { g += pull(a, o - 1u); }
  if (w + 1u < p.width) { g += pull(a, o + 1u); }
  if (h > 0u) { g += pull(a, o - p.width); }
  if (h + 1u < p.height) { g += pull(a, o + p.width); }
  dflow[2u * o] = dy[n] * g.x;
  dflow[2u * o + 1u] = dy[n] * g.y;
}`;
