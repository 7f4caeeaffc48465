/**
 * Reductions over chosen axes (sum, max, min), in two kernels that share one parameter block.
 *
 * The host first simplifies the problem (src/ops/reduce_axes.ts): size-1 dimensions are
 * dropped and neighbouring dimensions that are both kept or both reduced are merged, so a
 * reduction of NCHW over [0, 2, 3] becomes "kept C (stride H*W); reduced rows N (stride
 * C*H*W) of H*W contiguous elements". The reduced elements of one output are then addressed as
 * (row j, element i of the innermost run) with offset row_offset(j) + i * inner_stride, which
 * costs no integer division in the inner loop (divisions are slow on every GPU, and emulated
 * lane by lane on CPU adapters).
 *
 *  - `reduceShader`: one invocation per (output, chunk) streams its contiguous chunk of the
 *    reduced range in a tight loop. With one chunk, the plain per-output reduction. The fast
 *    shape on CPU adapters, where every lane runs its own loop.
 *  - `reduceTreeShader`: one workgroup per (output, chunk). Its lanes interleave through the
 *    chunk (neighbouring lanes read neighbouring elements, as GPUs want), then combine their
 *    partial results in a tree in workgroup memory (log2(size) steps).
 * With several chunks, a further launch reduces the [outputs, chunks] partial results.
 * Both are deterministic: the order of additions depends only on the shapes, never on timing
 * (no atomics).
 */
import { extremumNanWgsl, flatIndex, memoizeShader, WORKGROUP_1D } from "./common.ts";

export const REDUCE_MAX_RANK = 8;

export type ReduceKind = "sum" | "max" | "min";

/** Optional maps: `load` applies to each element `v` on first read (e.g. `v * v`), `store`
 * to the final value `acc` (e.g. `sqrt(acc)`). */
export interface ReduceTransform {
  load?: string;
  store?: string;
}

// max / min start from -inf / +inf (a slice of infinities reduces to one) and let NaN win, as
// in PyTorch (WGSL's max and min may drop a NaN operand).
const INIT: Record<ReduceKind, string> = {
  sum: "0.0",
  max: "bitcast<f32>(0xff800000u)",
  min: "bitcast<f32>(0x7f800000u)",
};
const COMBINE: Record<ReduceKind, (a: string, b: string) => string> = {
  sum: (a, b) => `${a} + ${b}`,
  max: (a, b) => `max_nan(${a}, ${b})`,
  min: (a, b) => `min_nan(${a}, ${b})`,
};

const DIMS = REDUCE_MAX_RANK / 4;

const header = /* wgsl */ `
struct Params {
  n_out: u32, n_reduce: u32, kept_rank: u32, outer_rank: u32,
  // Innermost reduced run: length and stride; rows = n_reduce / inner_size.
  inner_size: u32, inner_stride: u32, rows: u32, scale: f32,
  // Tree kernel: chunks per output, elements per chunk, and the lane step (group size)
  // expressed as (rows, elements) so lanes advance without dividing.
  chunks: u32, chunk_len: u32, step_rows: u32, step_inner: u32,
  kept_shape: array<vec4<u32>, ${DIMS}>,
  kept_strides: array<vec4<u32>, ${DIMS}>,
  outer_shape: array<vec4<u32>, ${DIMS}>,
  outer_strides: array<vec4<u32>, ${DIMS}>,
}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

${extremumNanWgsl}

// Offset of output o's first element: o's coordinates in the kept dimensions times their
// strides. The outermost dimension needs no modulo.
fn kept_offset(o: u32) -> u32 {
  if (p.kept_rank == 0u) { return 0u; }
  var rest = o;
  var offset = 0u;
  for (var d = p.kept_rank - 1u; d > 0u; d--) {
    let dim = p.kept_shape[d / 4u][d % 4u];
    offset += (rest % dim) * p.kept_strides[d / 4u][d % 4u];
    rest = rest / dim;
  }
  return offset + rest * p.kept_strides[0][0];
}

// Offset of reduced row j (the reduced dimensions outside the innermost run).
fn row_offset(j: u32) -> u32 {
  if (p.outer_rank == 0u) { return 0u; }
  var rest = j;
  var offset = 0u;
  for (var d = p.outer_rank - 1u; d > 0u; d--) {
    let dim = p.outer_shape[d / 4u][d % 4u];
    offset += (rest % dim) * p.outer_strides[d / 4u][d % 4u];
    rest = rest / dim;
  }
  return offset + rest * p.outer_strides[0][0];
}
`;

/** The transform as two WGSL functions (identity by default). */
function transformFns(transform: ReduceTransform): string {
  return /* wgsl */ `
fn load_value(v: f32) -> f32 { return ${transform.load ?? "v"}; }
fn store_value(acc: f32) -> f32 { return ${transform.store ?? "acc"}; }`;
}

/**
 * One invocation per (output, chunk): invocation g reduces the elements
 * [c * chunk_len, (c + 1) * chunk_len) of output g / chunks, with c = g % chunks, in one
 * tight loop per row, and writes out[g]. With one chunk this is the plain per-output
 * reduction; with several, a second launch reduces the chunks' partial results. No workgroup
 * memory or barriers: the fast shape on CPU adapters, where each lane streams its own range.
 */
export const reduceShader = memoizeShader(generateReduceShader);

function generateReduceShader(kind: ReduceKind, transform: ReduceTransform = {}): string {
  return /* wgsl */ `
${flatIndex}
${header}
${transformFns(transform)}
@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let g = flat_index(gid, nwg);
  if (g >= p.n_out * p.chunks) { return; }
  let base = kept_offset(g / p.chunks);
  var r = (g % p.chunks) * p.chunk_len;
  let end = min(r + p.chunk_len, p.n_reduce);
  // Start at row j, position i of the innermost run; then whole rows until the chunk ends.
  var j = r / p.inner_size;
  var i = r % p.inner_size;
  var acc = ${INIT[kind]};
  while (r < end) {
    let row = base + row_offset(j);
    let n = min(p.inner_size - i, end - r);
    for (var k = i; k < i + n; k++) {
      let v = load_value(x[row + k * p.inner_stride]);
      acc = ${COMBINE[kind]("acc", "v")};
    }
    r += n;
    j += 1u;
    i = 0u;
  }
  out[g] = store_value(acc * p.scale);
}`;
}

/**
 * One workgroup of `groupSize` lanes per (output, chunk). Workgroup g handles output
 * g / chunks, reduced elements [c * chunk_len, (c + 1) * chunk_len) with c = g % chunks;
 * lane t takes elements t, t + groupSize, ... of the chunk. Writes out[g].
 */
export const reduceTreeShader = memoizeShader(generateReduceTreeShader);

function generateReduceTreeShader(
  kind: ReduceKind,
  groupSize: number,
  transform: ReduceTransform = {},
): string {
  return /* wgsl */ `
${header}
${transformFns(transform)}
var<workgroup> partial: array<f32, ${groupSize}>;

@compute @workgroup_size(${groupSize})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let g = wid.x + wid.y * nwg.x;
  // Uniform per workgroup, so the barriers below stay in uniform control flow.
  if (g >= p.n_out * p.chunks) { return; }
  let o = g / p.chunks;
  let start = (g % p.chunks) * p.chunk_len;
  let end = min(start + p.chunk_len, p.n_reduce);
  let base = kept_offset(o);
  var acc = ${INIT[kind]};
  var r = start + t;
  if (r < end) {
    // Coordinates of element r: row j, position i in the innermost run (one division per
    // lane); afterwards each step of groupSize elements is step_rows rows + step_inner.
    var j = r / p.inner_size;
    var i = r % p.inner_size;
    loop {
      let v = load_value(x[base + row_offset(j) + i * p.inner_stride]);
      acc = ${COMBINE[kind]("acc", "v")};
      r += ${groupSize}u;
      if (r >= end) { break; }
      i += p.step_inner;
      j += p.step_rows;
      if (i >= p.inner_size) {
        i -= p.inner_size;
        j += 1u;
      }
    }
  }
  partial[t] = acc;
  workgroupBarrier();
  // Tree: halve the number of active lanes each step.
  for (var s = ${groupSize / 2}u; s > 0u; s = s >> 1u) {
    if (t < s) {
      partial[t] = ${COMBINE[kind]("partial[t]", "partial[t + s]")};
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    out[g] = store_value(partial[0] * p.scale);
  }
}`;
}
