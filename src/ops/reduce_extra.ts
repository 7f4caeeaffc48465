/**
 * Reductions beyond sum/mean/max/min: argmax (no gradient), per-sample L2 norms (for L2
 * attacks and gradient clipping) and a numerically stable log-sum-exp.
 */
import { argmaxShader } from "../../shaders/argmax.ts";
import { logSumExpShader } from "../../shaders/logsumexp.ts";
import { record } from "../autograd/tape.ts";
import { fmt, normAxis, type Shape, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkFloat, mapElements } from "./elementwise.ts";
import { checkLoopLength, CPU_ADAPTER_MAX_LOOP, grid1d, launch, output, params } from "./kernel.ts";
import { reduceAxes } from "./reduce_axes.ts";

/** Longest axis the one-invocation-per-output kernels walk on CPU adapters (llvmpipe's loop limit). */
export const MAX_AXIS_CPU = CPU_ADAPTER_MAX_LOOP;

/** The tensor as [outer, len, inner] around `axis`, and the shapes without / with it kept. */
function aroundAxis(op: string, x: Tensor, axis: number) {
  if (x.rank === 0) throw new ShapeError(op, `needs a tensor of rank >= 1, got a scalar ${fmt(x.shape)}`);
  const a = normAxis(op, axis, x.rank);
  const len = x.shape[a];
  const inner = x.shape.slice(a + 1).reduce((n, d) => n * d, 1);
  if (len === 0) throw new ShapeError(op, `axis ${axis} of ${fmt(x.shape)} is empty`);
  checkLoopLength(op, len, `axis ${axis} of ${fmt(x.shape)}`);
  const removed = x.shape.filter((_, d) => d !== a);
  const kept: Shape = x.shape.map((s, d) => (d === a ? 1 : s));
  return { len, inner, removed, kept };
}

/** Index (i32) of the largest element along `axis`; the first one on ties. No gradient. */
export function argmax(x: Tensor, axis: number, keepDims = false): Tensor {
  checkFloat("argmax", x);
  const { len, inner, removed, kept } = aroundAxis("argmax", x, axis);
  const out = output("argmax", keepDims ? kept : removed, "i32");
  if (out.size === 0) return out;
  launch("argmax", argmaxShader, [x, out, params().u32(out.size, len, inner, 0)], grid1d(out.size));
  return out;
}

/**
 * ||x_n||_2 for each sample n of a batch [N, ...]: the square root of the sum of squares over
 * all non-batch dimensions, shape [N]. Gradient dy_n * x / ||x_n||, and 0 for a zero sample
 * (the subgradient PyTorch's norm uses).
 */
export function l2NormPerSample(x: Tensor): Tensor {
  const op = "l2NormPerSample";
  checkFloat(op, x);
  if (x.rank === 0) throw new ShapeError(op, `needs a batch [N, ...], got a scalar ${fmt(x.shape)}`);
  const axes = x.shape.map((_, d) => d).slice(1);
  const norm = reduceAxes(op, "sum", x, axes, false, 1, { load: "v * v", store: "sqrt(acc)" });
  return record(op, [x], norm, (dy) => {
    const perSample = [x.shape[0], ...axes.map(() => 1)];
    const g = dy.alias(perSample), n = norm.alias(perSample);
    const dx = mapElements(`${op}.backward`, "select(0.0, a * b / c, c > 0.0)", [g, x, n]);
    g.dispose();
    n.dispose();
    return [dx];
  });
}

/**
 * log(sum(exp(x))) along `axis`, computed stably (never overflows for large x). Gradient:
 * softmax(x) * dy, i.e. dy * exp(x - y).
 */
export function logSumExp(x: Tensor, axis: number, keepDims = false): Tensor {
  const op = "logSumExp";
  checkFloat(op, x);
  const { len, inner, removed, kept } = aroundAxis(op, x, axis);
  const out = output(op, keepDims ? kept : removed);
  if (out.size > 0) {
    launch(op, logSumExpShader, [x, out, params().u32(out.size, len, inner, 0)], grid1d(out.size));
  }
  return record(op, [x], out, (dy) => {
    const g = dy.alias(kept), y = out.alias(kept);
    const dx = mapElements(`${op}.backward`, "a * exp(b - c)", [g, x, y]);
    g.dispose();
    y.dispose();
    return [dx];
  });
}
