/**
 * The reduction kernels' dispatch: reduce a tensor over a set of axes (no autograd here; the
 * differentiable sum/mean/max live in reduce.ts). Also `sumToShape`, which undoes
 * broadcasting in gradient rules.
 *
 * With many outputs, one invocation per output does the whole job. With few outputs and many
 * reduced elements (a loss summed to a scalar, per-channel batch statistics) each output's
 * range is cut into chunks, reduced in parallel into partial results, which a further pass
 * reduces (see chooseStrategy and shaders/reduce.ts). Deterministic: the order of additions
 * depends only on the shapes and the adapter class.
 */
import {
  REDUCE_MAX_RANK,
  type ReduceKind,
  reduceShader,
  type ReduceTransform,
  reduceTreeShader,
} from "../../shaders/reduce.ts";
import { currentGpu } from "../device/runtime.ts";
import { fmt, type Shape, ShapeError, stridesOf } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkFloat } from "./elementwise.ts";
import { bitsOf, fillBits, grid1d, launch, output, params } from "./kernel.ts";

/** "lanes": per-invocation chunks (CPU-tuned); "tree": workgroup trees (GPU-tuned). */
export type ReducePath = "auto" | "lanes" | "tree";

/** Knobs of the reduction strategy. `path` forces a strategy (tests run both). */
export const reduceTuning = {
  path: "auto" as ReducePath,
  /**
   * Most elements one invocation reduces. llvmpipe (lavapipe) silently ends all loops of an
   * invocation once they have run 65,535 iterations in all (its guard against infinite loops;
   * measured: a loop of 100,000 additions stops at 65,535, no error), so longer reductions
   * are cut into chunks and finished by further passes. A lane runs at most ~8 loop
   * iterations per element (rows of one element, each with a rank-7 row index), so 4096
   * stays below the limit. Tests lower it to exercise several passes.
   */
  maxPerLane: 4096,
  /** Lanes per workgroup of the tree kernel (a power of two). */
  groupSize: 256,
  /** Lanes (invocations) worth splitting for, in all; CPU adapters have few threads. */
  targetLanes: { cpu: 1024, gpu: 65536 },
  /** Fewest elements per lane in a chunk, so per-chunk costs are amortised. */
  minPerLane: { cpu: 1024, gpu: 16 },
};

/** How a reduction runs: which kernel, and the chunks each output's range is cut into. */
export interface ReduceStrategy {
  tree: boolean;
  /** Chunks per output (1: a single pass). */
  chunks: number;
  /** Elements per chunk (the last may be shorter). */
  chunkLen: number;
}

/** One dimension of the simplified problem. */
interface Dim {
  size: number;
  stride: number;
}

/**
 * The reduction in its simplest form: size-1 dimensions dropped, neighbours of the same kind
 * merged (valid because tensors are contiguous: stride[d] = size[d+1] * stride[d+1]).
 */
export interface ReducePlan {
  kept: Dim[];
  /** Reduced dimensions outside the innermost reduced run ("rows"). */
  outer: Dim[];
  inner: Dim;
  nOut: number;
  nReduce: number;
}

export function planReduction(shape: Shape, axes: number[]): ReducePlan {
  const reduced = new Set(axes);
  const strides = stridesOf(shape);
  const merged: (Dim & { reduced: boolean })[] = [];
  shape.forEach((size, d) => {
    if (size === 1) return;
    const last = merged[merged.length - 1];
    if (last && last.reduced === reduced.has(d)) {
      last.size *= size;
      last.stride = strides[d];
    } else merged.push({ size, stride: strides[d], reduced: reduced.has(d) });
  });
  const kept = merged.filter((d) => !d.reduced).map(({ size, stride }) => ({ size, stride }));
  const red = merged.filter((d) => d.reduced).map(({ size, stride }) => ({ size, stride }));
  const inner = red.pop() ?? { size: 1, stride: 1 };
  const nOut = kept.reduce((n, d) => n * d.size, 1);
  const nReduce = red.reduce((n, d) => n * d.size, inner.size);
  return { kept, outer: red, inner, nOut, nReduce };
}

/**
 * Splits each output's reduced range into chunks when there are too few outputs to keep the
 * device busy, or when one lane would loop too long. CPU adapters (measured on lavapipe: 3-10x
 * faster than interleaved lanes): each invocation streams a contiguous chunk (`lanes`). GPUs:
 * a workgroup per chunk whose lanes interleave, so neighbouring lanes read neighbouring
 * elements (`tree`).
 */
export function chooseStrategy(nOut: number, nReduce: number): ReduceStrategy {
  const cls = currentGpu().adapterClass;
  const forced = reduceTuning.path !== "auto";
  const tree = forced ? reduceTuning.path === "tree" : cls === "gpu";
  const lanes = reduceTuning.targetLanes[cls];
  const group = reduceTuning.groupSize;
  // Lanes per chunk (1, or a workgroup) and the chunks' length bounds.
  const width = tree ? group : 1;
  const maxLen = width * reduceTuning.maxPerLane, minLen = width * reduceTuning.minPerLane[cls];
  if (tree && !forced && (nReduce < 2 * group || nOut >= lanes)) {
    // Plenty of outputs, or too little to reduce: one lane per output (per chunk).
    return split(false, Math.ceil(nReduce / reduceTuning.maxPerLane), nReduce, 1);
  }
  const wanted = Math.min(Math.ceil(nReduce / minLen), Math.ceil(lanes / (width * nOut)));
  return split(tree, Math.max(1, wanted, Math.ceil(nReduce / maxLen)), nReduce, width);
}

/** Cuts n elements into about `chunks` chunks whose length is a multiple of `quantum` (tree
 * chunks are whole multiples of the group, so every lane takes the same number of steps). */
function split(tree: boolean, chunks: number, n: number, quantum: number): ReduceStrategy {
  const chunkLen = Math.ceil(Math.ceil(n / chunks) / quantum) * quantum;
  return { tree, chunks: Math.ceil(n / chunkLen), chunkLen };
}

function pad(v: number[]): number[] {
  return [...v, ...new Array(REDUCE_MAX_RANK - v.length).fill(1)];
}

/** Dispatches one reduction kernel over `plan` from `x` into `out`. */
function dispatchReduce(
  op: string,
  kind: ReduceKind,
  x: Tensor,
  out: Tensor,
  plan: ReducePlan,
  scale: number,
  transform: ReduceTransform,
  { tree, chunks, chunkLen }: ReduceStrategy,
): void {
  const group = reduceTuning.groupSize;
  const p = params()
    .u32(plan.nOut, plan.nReduce, plan.kept.length, plan.outer.length)
    .u32(plan.inner.size, plan.inner.stride, plan.nReduce / plan.inner.size).f32(scale)
    .u32(chunks, chunkLen, Math.floor(group / plan.inner.size), group % plan.inner.size)
    .u32(...pad(plan.kept.map((d) => d.size)))
    .u32(...pad(plan.kept.map((d) => d.stride)))
    .u32(...pad(plan.outer.map((d) => d.size)))
    .u32(...pad(plan.outer.map((d) => d.stride)));
  const groups = plan.nOut * chunks;
  if (tree) launch(op, reduceTreeShader(kind, group, transform), [x, out, p], grid1d(groups, 1));
  else launch(op, reduceShader(kind, transform), [x, out, p], grid1d(groups));
}

/**
 * Reduces `x` over `axes` (already normalised, any order); returns the kept dimensions
 * (`keepDims`: reduced ones as size 1). `scale` multiplies the result (1/n for a mean);
 * `transform` maps elements on load and the result on store (see ReduceTransform).
 */
export function reduceAxes(
  op: string,
  kind: ReduceKind,
  x: Tensor,
  axes: number[],
  keepDims: boolean,
  scale = 1,
  transform: ReduceTransform = {},
): Tensor {
  checkFloat(op, x);
  if (x.rank > REDUCE_MAX_RANK) {
    throw new ShapeError(op, `rank ${x.rank} exceeds the supported ${REDUCE_MAX_RANK}`);
  }
  const reduced = new Set(axes);
  const outShape = keepDims
    ? x.shape.map((s, d) => (reduced.has(d) ? 1 : s))
    : x.shape.filter((_, d) => !reduced.has(d));
  const plan = planReduction(x.shape, axes);
  if (plan.nReduce === 0 && kind !== "sum") {
    throw new ShapeError(op, `cannot take ${kind} over an empty axis of ${fmt(x.shape)}`);
  }
  const out = output(op, outShape);
  if (out.size === 0) return out;
  if (plan.nReduce === 0) {
    // An empty sum is 0 (callers' store transforms map 0 to 0, like sqrt); a mean (scale
    // 1/0) is 0 * inf = NaN, as in PyTorch.
    fillBits(out, bitsOf(0 * scale, "f32"), op);
    return out;
  }
  reduceInto(op, kind, x, out, plan, scale, transform);
  return out;
}

/** Runs the plan's reduction into `out`: one pass, or a pass per chunk then a reduction of
 * the chunks' partial results (itself split again if there are very many). */
function reduceInto(
  op: string,
  kind: ReduceKind,
  x: Tensor,
  out: Tensor,
  plan: ReducePlan,
  scale: number,
  transform: ReduceTransform,
): void {
  const strategy = chooseStrategy(plan.nOut, plan.nReduce);
  if (strategy.chunks === 1) {
    dispatchReduce(op, kind, x, out, plan, scale, transform, strategy);
    return;
  }
  // Pass 1: partial results per (output, chunk), laid out [nOut, chunks].
  const partial = output(op + ".partial", [plan.nOut * strategy.chunks]);
  dispatchReduce(op, kind, x, partial, plan, 1, { load: transform.load }, strategy);
  // Pass 2: reduce each output's contiguous run of chunks.
  const second = planReduction([plan.nOut, strategy.chunks], [1]);
  reduceInto(op, kind, partial, out, second, scale, { store: transform.store });
  partial.dispose();
}

/**
 * Sums a gradient of a broadcast result back to the shape of the input that was broadcast
 * (NumPy rules: leading dimensions and dimensions of size 1 were expanded).
 */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g.alias();
  const offset = g.rank - shape.length;
  if (offset < 0) {
    throw new ShapeError("sumToShape", `cannot reduce ${fmt(g.shape)} to ${fmt(shape)}`);
  }
  const axes: number[] = [];
  for (let d = 0; d < g.rank; d++) {
    if (d < offset || (shape[d - offset] === 1 && g.shape[d] !== 1)) axes.push(d);
  }
  const summed = reduceAxes("sumToShape", "sum", g, axes, true);
  const result = summed.alias(shape);
  summed.dispose();
  return result;
}
