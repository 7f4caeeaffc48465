/**
 * The reduction kernel's dispatch: reduce a tensor over a set of axes (no autograd here; the
 * differentiable sum/mean/max live in reduce.ts). Also `sumToShape`, which undoes
 * broadcasting in gradient rules.
 */
import { REDUCE_MAX_RANK, type ReduceKind, reduceShader } from "../../shaders/reduce.ts";
import { fmt, type Shape, ShapeError, stridesOf } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkFloat } from "./elementwise.ts";
import { grid1d, launch, output, params } from "./kernel.ts";

/**
 * Reduces `x` over `axes` (already normalised, any order); returns the kept dimensions
 * (`keepDims`: reduced ones as size 1). `scale` multiplies the result (1/n for a mean).
 */
export function reduceAxes(
  op: string,
  kind: ReduceKind,
  x: Tensor,
  axes: number[],
  keepDims: boolean,
  scale = 1,
): Tensor {
  checkFloat(op, x);
  if (x.rank > REDUCE_MAX_RANK) {
    throw new ShapeError(op, `rank ${x.rank} exceeds the supported ${REDUCE_MAX_RANK}`);
  }
  const reduced = new Set(axes);
  const strides = stridesOf(x.shape);
  const kept = x.shape.map((_, d) => d).filter((d) => !reduced.has(d));
  const red = x.shape.map((_, d) => d).filter((d) => reduced.has(d));
  const outShape = keepDims ? x.shape.map((s, d) => (reduced.has(d) ? 1 : s)) : kept.map((d) => x.shape[d]);
  const nReduce = red.reduce((n, d) => n * x.shape[d], 1);
  if (nReduce === 0 && kind !== "sum") {
    throw new ShapeError(op, `cannot take ${kind} over an empty axis of ${fmt(x.shape)}`);
  }
  const out = output(op, outShape);
  if (out.size === 0) return out;
  const pad = (v: number[]) => [...v, ...new Array(REDUCE_MAX_RANK - v.length).fill(1)];
  const p = params()
    .u32(out.size, nReduce, kept.length, red.length)
    .f32(scale).u32(0, 0, 0)
    .u32(...pad(kept.map((d) => x.shape[d])))
    .u32(...pad(kept.map((d) => strides[d])))
    .u32(...pad(red.map((d) => x.shape[d])))
    .u32(...pad(red.map((d) => strides[d])));
  launch(op, reduceShader(kind), [x, out, p], grid1d(out.size));
  return out;
}

/**
 * Sums a gradient of a broadcast result back to the shape of the input that was broadcast
 * (NumPy rules: leading dimensions and dimensions of size 1 were expanded).
 */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g.view();
  const offset = g.rank - shape.length;
  if (offset < 0) {
    throw new ShapeError("sumToShape", `cannot reduce ${fmt(g.shape)} to ${fmt(shape)}`);
  }
  const axes: number[] = [];
  for (let d = 0; d < g.rank; d++) {
    if (d < offset || (shape[d - offset] === 1 && g.shape[d] !== 1)) axes.push(d);
  }
  const summed = reduceAxes("sumToShape", "sum", g, axes, true);
  const result = summed.view(shape);
  summed.dispose();
  return result;
}
