/**
 * Loss kernels: row-wise log-softmax and softmax cross-entropy, and a deterministic
 * sum-to-scalar reduction used by every loss's "mean" / "sum" reduction.
 *
 * Row kernels see a tensor as [outer, K, inner] and reduce over K: row r starts at
 * (r / inner) * K * inner + r % inner and steps by `inner` (inner = 1 for the last axis).
 * Two variants of every row kernel:
 *  - "thread": one invocation per row loops over the K elements. Best on CPU adapters
 *    (llvmpipe runs a workgroup on one thread; barriers are coroutine switches) and whenever
 *    there are many short rows (a batch of 10-class logits).
 *  - "workgroup": one workgroup of ROW_LANES invocations per row, each lane taking every
 *    ROW_LANES-th element, then a tree reduction in workgroup memory. Best on real GPUs with
 *    long rows (K = 1000) and few of them.
 * Softmax is always computed stably: m = max_j x_j, log sum_j exp(x_j) = m + log sum_j exp(x_j - m),
 * so no exp() ever sees a positive argument.
 */
import { wgsl } from "wgsl-preprocessor";
import { flatIndex, memoizeShader, WORKGROUP_1D } from "./common.ts";

export type RowVariant = "thread" | "workgroup";

/** Invocations per row in the "workgroup" variant (and per workgroup in the "thread" one). */
export const ROW_LANES = 64;

/** Invocations of the sum-to-scalar reduction's workgroup. */
export const SUM_LANES = 256;

const LOWEST_F32 = "-3.4028234663852886e38";

/** Quiet NaN, produced for rows whose label is out of range. */
const NAN = "bitcast<f32>(0x7fc00000u)";

/**
 * Row indexing and row reductions for both variants. Defines `row_max` and `row_sum`, which
 * every lane of a row calls with its partial value and which return the row's total.
 */
function rowPrelude(variant: RowVariant): string {
  const perWorkgroup = variant === "workgroup";
  return wgsl`
struct RowParams { rows: u32, k: u32, inner: u32, _pad: u32 }

// First element of a row; elements are \`inner\` apart.
fn row_base(row: u32, p: RowParams) -> u32 {
  return (row / p.inner) * p.k * p.inner + row % p.inner;
}

#if ${perWorkgroup}
const LANES = ${ROW_LANES}u;
var<workgroup> scratch: array<f32, ${ROW_LANES}>;

fn row_max(v: f32, lane: u32) -> f32 {
  scratch[lane] = v;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { scratch[lane] = max(scratch[lane], scratch[lane + s]); }
    workgroupBarrier();
  }
  let total = scratch[0];
  workgroupBarrier(); // everyone has read scratch[0] before it is reused
  return total;
}

fn row_sum(v: f32, lane: u32) -> f32 {
  scratch[lane] = v;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { scratch[lane] = scratch[lane] + scratch[lane + s]; }
    workgroupBarrier();
  }
  let total = scratch[0];
  workgroupBarrier();
  return total;
}
#else
const LANES = 1u;
fn row_max(v: f32, lane: u32) -> f32 { return v; }
fn row_sum(v: f32, lane: u32) -> f32 { return v; }
#endif
`;
}

/** Entry point header: binds `row` and `lane` for either variant. */
function rowMain(variant: RowVariant): string {
  return variant === "workgroup"
    ? /* wgsl */ `
@compute @workgroup_size(${ROW_LANES})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let row = wid.x + wid.y * nwg.x; // uniform across the workgroup, so barriers are allowed
  if (row >= p.rows) { return; }`
    : /* wgsl */ `
@compute @workgroup_size(${ROW_LANES})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = gid.x + gid.y * nwg.x * ${ROW_LANES}u;
  let lane = 0u;
  if (row >= p.rows) { return; }`;
}

/** Max and log-sum-exp of a row of `x`: leaves `m` and `log_s` (log sum_j exp(x_j - m)). */
const rowLogSumExp = /* wgsl */ `
  let base = row_base(row, p);
  var m = ${LOWEST_F32};
  for (var j = lane; j < p.k; j += LANES) { m = max(m, x[base + j * p.inner]); }
  m = row_max(m, lane);
  var s = 0.0;
  for (var j = lane; j < p.k; j += LANES) { s += exp(x[base + j * p.inner] - m); }
  let log_s = log(row_sum(s, lane));`;

/** y = log softmax(x) along the rows: y_j = (x_j - m) - log sum exp(x - m). */
export const logSoftmaxShader = memoizeShader(generateLogSoftmaxShader);

function generateLogSoftmaxShader(variant: RowVariant): string {
  return /* wgsl */ `
${rowPrelude(variant)}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: RowParams;
${rowMain(variant)}
${rowLogSumExp}
  for (var j = lane; j < p.k; j += LANES) {
    let i = base + j * p.inner;
    y[i] = (x[i] - m) - log_s;
  }
}`;
}

/**
 * Backward of log-softmax from its output y: dx_j = dy_j - softmax_j * sum_k dy_k, with
 * softmax_j = exp(y_j).
 */
export const logSoftmaxBackwardShader = memoizeShader(generateLogSoftmaxBackwardShader);

function generateLogSoftmaxBackwardShader(variant: RowVariant): string {
  return /* wgsl */ `
${rowPrelude(variant)}
@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> p: RowParams;
${rowMain(variant)}
  let base = row_base(row, p);
  var t = 0.0;
  for (var j = lane; j < p.k; j += LANES) { t += dy[base + j * p.inner]; }
  t = row_sum(t, lane);
  for (var j = lane; j < p.k; j += LANES) {
    let i = base + j * p.inner;
    dx[i] = dy[i] - exp(y[i]) * t;
  }
}`;
}

/**
 * Softmax cross-entropy per row of logits [N, K] with integer labels [N]:
 * loss_n = log sum_j exp(x_nj) - x_n,label = log_s - (x_n,label - m).
 * Also writes each row's (m, log_s) to `stats` [N, 2] for the backward pass.
 * A label outside [0, K) gives a NaN loss; x is then never indexed with it.
 */
export const crossEntropyShader = memoizeShader(generateCrossEntropyShader);

function generateCrossEntropyShader(variant: RowVariant): string {
  return /* wgsl */ `
${rowPrelude(variant)}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<i32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<uniform> p: RowParams;
${rowMain(variant)}
${rowLogSumExp}
  if (lane == 0u) {
    let label = labels[row];
    var value = ${NAN};
    if (label >= 0 && u32(label) < p.k) {
      value = log_s - (x[base + u32(label)] - m);
    }
    loss[row] = value;
    stats[2u * row] = m;
    stats[2u * row + 1u] = log_s;
  }
}`;
}

/**
 * Cross-entropy backward, one invocation per logit:
 * dx_nj = (softmax_nj - [j == label_n]) * dy[n * dy_stride] * scale,
 * with softmax_nj = exp((x_nj - m_n) - log_s_n) from the forward's stats. dy_stride is 0 for a
 * reduced (scalar) loss and 1 for per-row losses; scale is 1/N for "mean", else 1.
 * Rows with an out-of-range label get NaN (their loss was NaN too).
 */
export const crossEntropyBackwardShader = /* wgsl */ `
${flatIndex}
struct Params { n: u32, k: u32, dy_stride: u32, scale: f32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<i32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  let row = i / p.k;
  let j = i % p.k;
  let label = labels[row];
  let valid = label >= 0 && u32(label) < p.k;
  let softmax = exp((x[i] - stats[2u * row]) - stats[2u * row + 1u]);
  let onehot = select(0.0, 1.0, u32(label) == j); // never true for an invalid label
  let g = dy[row * p.dy_stride] * p.scale;
  dx[i] = select(${NAN}, (softmax - onehot) * g, valid);
}`;

/** A pointwise loss term of (a, b): the forward value and its derivative with respect to a. */
export type PointwiseLoss = "identity" | "squared" | "absolute";

const TERM: Record<PointwiseLoss, string> = {
  identity: "a[i]",
  squared: "(a[i] - b[i]) * (a[i] - b[i])",
  absolute: "abs(a[i] - b[i])",
};

const DERIVATIVE: Record<Exclude<PointwiseLoss, "identity">, string> = {
  squared: "2.0 * (a[i] - b[i])",
  absolute: "sign(a[i] - b[i])", // 0 where a == b
};

/**
 * out[w] = scale * sum of term(i) over the elements i = w * L + lane + t * (G * L), t = 0, 1, ...
 * for workgroup w of G (L = SUM_LANES): each lane sums a strided slice, then the workgroup adds
 * its lanes pairwise in workgroup memory. With G = 1 the result is the full sum; for large n a
 * first pass writes G partial sums and a second (term "identity") adds them. The order of
 * additions depends only on n and G, so the result is deterministic (no atomics).
 */
export const sumShader = memoizeShader(generateSumShader);

function generateSumShader(term: PointwiseLoss): string {
  const pair = term !== "identity";
  return wgsl`
struct Params { n: u32, scale: f32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
#if ${pair}
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
#else
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
#endif
var<workgroup> scratch: array<f32, ${SUM_LANES}>;

@compute @workgroup_size(${SUM_LANES})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let stride = nwg.x * ${SUM_LANES}u;
  var acc = 0.0;
  for (var i = wid.x * ${SUM_LANES}u + lane; i < p.n; i += stride) {
    acc += ${TERM[term]};
  }
  scratch[lane] = acc;
  workgroupBarrier();
  for (var s = ${SUM_LANES / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) { scratch[lane] = scratch[lane] + scratch[lane + s]; }
    workgroupBarrier();
  }
  if (lane == 0u) { out[wid.x] = scratch[0] * p.scale; }
}`;
}

/**
 * Gradient of a pointwise loss with respect to a: out[i] = d term / da * dy[i * dy_stride] * scale.
 * dy_stride is 0 for a reduced loss, 1 for "none"; the gradient for b is the same with -scale.
 */
export const pointwiseLossBackwardShader = memoizeShader(generatePointwiseLossBackwardShader);

function generatePointwiseLossBackwardShader(term: Exclude<PointwiseLoss, "identity">): string {
  return /* wgsl */ `
${flatIndex}
struct Params { n: u32, dy_stride: u32, scale: f32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = ${DERIVATIVE[term]} * dy[i * p.dy_stride] * p.scale;
}`;
}
