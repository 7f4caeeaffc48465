/**
 * Differentiable reductions over chosen axes: sum, mean, max, min.
 * Gradients: sum spreads dy to every reduced element; mean also divides by the count; max/min
 * send dy to the elements equal to the extremum (NaNs, where NaN is it), split evenly between ties
 * (as PyTorch's amax).
 */
import { isNanWgsl } from "../../shaders/common.ts";
import { record } from "../autograd/tape.ts";
import { normAxis, type Shape } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { mapElements } from "./elementwise.ts";
import { reduceAxes } from "./reduce_axes.ts";

export interface ReduceOptions {
  /** Axes to reduce (negative counts from the end); all axes when omitted. */
  axes?: number | number[];
  /** Keep reduced axes as size 1. */
  keepDims?: boolean;
}

export function resolveAxes(op: string, x: Tensor, axes?: number | number[]): number[] {
  if (axes === undefined) return x.shape.map((_, d) => d);
  const list = typeof axes === "number" ? [axes] : axes;
  return [...new Set(list.map((a) => normAxis(op, a, x.rank)))].sort((a, b) => a - b);
}

/** The shape with reduced axes set to 1 (to broadcast a reduced gradient back). */
export function keptShape(x: Tensor, axes: number[]): Shape {
  return x.shape.map((s, d) => (axes.includes(d) ? 1 : s));
}

/** Broadcasts `g` (reduced shape) back over `x`'s shape, times `scale`. */
function expandGrad(op: string, g: Tensor, x: Tensor, axes: number[], scale: number): Tensor {
  const view = g.alias(keptShape(x, axes));
  const out = mapElements(op, "a * s0", [view], { scalars: [scale], outShape: x.shape });
  view.dispose();
  return out;
}

export function sum(x: Tensor, options: ReduceOptions = {}): Tensor {
  const axes = resolveAxes("sum", x, options.axes);
  const out = reduceAxes("sum", "sum", x, axes, options.keepDims ?? false);
  return record("sum", [x], out, (dy) => [expandGrad("sum.backward", dy, x, axes, 1)], []);
}

export function mean(x: Tensor, options: ReduceOptions = {}): Tensor {
  const axes = resolveAxes("mean", x, options.axes);
  const n = axes.reduce((k, d) => k * x.shape[d], 1);
  const out = reduceAxes("mean", "sum", x, axes, options.keepDims ?? false, 1 / n);
  return record("mean", [x], out, (dy) => [expandGrad("mean.backward", dy, x, axes, 1 / n)], []);
}

function extremum(kind: "max" | "min", x: Tensor, options: ReduceOptions): Tensor {
  const axes = resolveAxes(kind, x, options.axes);
  const out = reduceAxes(kind, kind, x, axes, options.keepDims ?? false);
  return record(kind, [x], out, (dy) => {
    const shape = keptShape(x, axes);
    const m = out.alias(shape), g = dy.alias(shape);
    const op = `${kind}.backward`;
    // A NaN is the extremum where it wins (the output is NaN): it takes the gradient, as in
    // torch.max(x).backward(); NaN == NaN is false, which would give 0/0 everywhere.
    const isExtremum = mapElements(op, "select(0.0, 1.0, a == b || (is_nan(a) && is_nan(b)))", [x, m], {
      helpers: isNanWgsl,
    });
    const ties = reduceAxes(op, "sum", isExtremum, axes, true);
    const dx = mapElements(op, "a * b / c", [isExtremum, g, ties]);
    for (const t of [m, g, isExtremum, ties]) t.dispose();
    return [dx];
  });
}

export function max(x: Tensor, options: ReduceOptions = {}): Tensor {
  return extremum("max", x, options);
}

export function min(x: Tensor, options: ReduceOptions = {}): Tensor {
  return extremum("min", x, options);
}
