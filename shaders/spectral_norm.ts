/**
 * Kernels of spectral normalisation (src/ops/spectral_norm.ts), for a weight viewed as a
 * matrix W [rows, cols] (rows = output channels, cols = in·kh·kw):
 *
 *  - `matvecPartialsShader`: the products of power iteration, Wv (one invocation per row) or
 *    Wᵀu (one per column). The sum over k is cut into chunks of MATVEC_CHUNK terms, one
 *    invocation each, written as partial sums [chunks, n]: this bounds every invocation's loop
 *    (llvmpipe silently stops loops after 65,535 iterations) and gives a short, wide matrix
 *    enough invocations to fill a device. The next kernel adds the chunks up.
 *  - `normalizeVectorShader`: out = x / max(‖x‖, eps) with x_i = Σ_c partial[c·n + i],
 *    optionally also written into the persistent state vector (the layer's u or v).
 *  - `sigmaShader`: σ = uᵀ(Wv) = Σ_i u_i Σ_c partial[c·n + i].
 *  - `divideBySigmaShader`: Y = W / σ (σ read from its one-element buffer).
 *  - `spectralNormBackwardShader`: dW = dY/σ − (Σ dY⊙W)/σ² · u vᵀ.
 *
 * The vector kernels run as one workgroup: lanes stride through the vector, then combine their
 * partial sums in a tree in workgroup memory (a fixed order, so results are deterministic).
 * The vectors are short (a layer's channels, or in·kh·kw), so one workgroup is enough.
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";

/** Terms of the matrix-vector sum per invocation. */
export const MATVEC_CHUNK = 1024;

/** Invocations of the single workgroup of the vector kernels (a power of two, for the tree). */
export const VECTOR_LANES = 256;

/**
 * `transposed` false: partial[c·rows + i] = Σ_{j in chunk c} W[i, j] x[j]   (Wv, n = rows);
 * `transposed` true:  partial[c·cols + j] = Σ_{i in chunk c} W[i, j] x[i]   (Wᵀu, n = cols).
 */
export function matvecPartialsShader(transposed: boolean): string {
  const term = transposed ? "w[k * p.cols + o] * x[k]" : "w[o * p.cols + k] * x[k]";
  return /* wgsl */ `
${flatIndex}
struct Params { cols: u32, n: u32, k_total: u32, chunk: u32, total: u32 }
@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat_index(gid, nwg);
  if (idx >= p.total) { return; }
  let o = idx % p.n;          // the output element
  let begin = (idx / p.n) * p.chunk;
  let end = min(begin + p.chunk, p.k_total);
  var acc = 0.0;
  for (var k = begin; k < end; k++) { acc += ${term}; }
  partial[idx] = acc;
}`;
}

/** Shared by the vector kernels: element i of x summed over its chunks, and a tree sum. */
const vectorPrelude = /* wgsl */ `
const LANES = ${VECTOR_LANES}u;
var<workgroup> scratch: array<f32, ${VECTOR_LANES}>;

fn chunk_sum(i: u32) -> f32 {
  var s = 0.0;
  for (var c = 0u; c < p.chunks; c++) { s += x[c * p.n + i]; }
  return s;
}

// Sum of every lane's value (all lanes must call it).
fn workgroup_sum(v: f32, lane: u32) -> f32 {
  scratch[lane] = v;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { scratch[lane] = scratch[lane] + scratch[lane + s]; }
    workgroupBarrier();
  }
  return scratch[0];
}`;

/** `withState`: also write the result into binding 2 (`state`), in place. */
export function normalizeVectorShader(withState: boolean): string {
  const stateBinding = withState ? "@group(0) @binding(2) var<storage, read_write> state: array<f32>;" : "";
  return /* wgsl */ `
struct Params { n: u32, chunks: u32, eps: f32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
${stateBinding}
@group(0) @binding(${withState ? 3 : 2}) var<uniform> p: Params;
${vectorPrelude}

@compute @workgroup_size(${VECTOR_LANES})
fn main(@builtin(local_invocation_index) lane: u32) {
  var squares = 0.0;
  for (var i = lane; i < p.n; i += LANES) {
    let v = chunk_sum(i);
    squares += v * v;
  }
  let scale = 1.0 / max(sqrt(workgroup_sum(squares, lane)), p.eps);
  for (var i = lane; i < p.n; i += LANES) {
    let v = chunk_sum(i) * scale;
    out[i] = v;${withState ? "\n    state[i] = v;" : ""}
  }
}`;
}

/** sigma[0] = Σ_i u_i x_i with x_i = Σ_c partial[c·n + i] (x = Wv). */
export const sigmaShader = /* wgsl */ `
struct Params { n: u32, chunks: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> u: array<f32>;
@group(0) @binding(2) var<storage, read_write> sigma: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${vectorPrelude}

@compute @workgroup_size(${VECTOR_LANES})
fn main(@builtin(local_invocation_index) lane: u32) {
  var acc = 0.0;
  for (var i = lane; i < p.n; i += LANES) { acc += u[i] * chunk_sum(i); }
  let total = workgroup_sum(acc, lane);
  if (lane == 0u) { sigma[0] = total; }
}`;

/** y = w / sigma[0]. */
export const divideBySigmaShader = /* wgsl */ `
${flatIndex}
struct Params { total: u32 }
@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read> sigma: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat_index(gid, nwg);
  if (idx < p.total) { y[idx] = w[idx] / sigma[0]; }
}`;

/**
 * dW[i, j] = dY[i, j] / σ − (t / σ²) u_i v_j with t = Σ dY⊙W: the derivative of W/σ with
 * σ = uᵀWv and u, v held constant.
 */
export const spectralNormBackwardShader = /* wgsl */ `
${flatIndex}
struct Params { total: u32, cols: u32 }
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> u: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> sigma: array<f32>;
@group(0) @binding(4) var<storage, read> t: array<f32>;
@group(0) @binding(5) var<storage, read_write> dw: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = flat_index(gid, nwg);
  if (idx >= p.total) { return; }
  let s = sigma[0];
  dw[idx] = dy[idx] / s - t[0] / (s * s) * u[idx / p.cols] * v[idx % p.cols];
}`;
