/**
 * Dispatch of the generic elementwise kernel (see shaders/elementwise.ts), with shape checks
 * and NumPy broadcasting. The ops with their gradient rules live in arithmetic.ts (binary
 * arithmetic) and unary.ts (math and activations).
 */
import { elementwiseShader, MAX_RANK } from "../../shaders/elementwise.ts";
import { broadcastShapes, fmt, sameShape, type Shape, ShapeError, stridesOf } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { grid1d, launch, output, params } from "./kernel.ts";

export interface MapOptions {
  /** Scalars visible to the expression as `s0`, `s1`. */
  scalars?: [number, number?];
  helpers?: string;
  /** Broadcast the inputs to this shape too (e.g. expanding a reduced gradient). */
  outShape?: Shape;
}

export function checkFloat(op: string, ...tensors: Tensor[]): void {
  for (const t of tensors) {
    if (t.dtype !== "f32") {
      throw new ShapeError(op, `expects f32 tensors, got ${t.describe()}`);
    }
    if (t.isDisposed) throw new Error(`${op}: input tensor was disposed`);
  }
}

/** The broadcast shape of all inputs (throws naming the op if they do not broadcast). */
export function broadcastAll(op: string, inputs: Tensor[]): number[] {
  return inputs.reduce<number[]>((s, t) => broadcastShapes(op, s, t.shape), []);
}

/** out = expr(a, b, c, s0, s1) elementwise, broadcasting the inputs. No autograd. */
export function mapElements(op: string, expr: string, inputs: Tensor[], options: MapOptions = {}): Tensor {
  checkFloat(op, ...inputs);
  let shape = broadcastAll(op, inputs);
  if (options.outShape) shape = broadcastShapes(op, shape, options.outShape);
  if (shape.length > MAX_RANK) {
    throw new ShapeError(op, `rank ${shape.length} exceeds the supported ${MAX_RANK}`);
  }
  const out = output(op, shape);
  if (out.size === 0) return out;
  const broadcast = inputs.some((t) => !sameShape(t.shape, shape));
  const [s0 = 0, s1 = 0] = options.scalars ?? [];
  const k = inputs.length as 1 | 2 | 3;
  if (!broadcast && out.size % 4 === 0) {
    const source = elementwiseShader({ expr, inputs: k, broadcast, vec4: true, helpers: options.helpers });
    const n = out.size / 4;
    launch(op, source, [...inputs, out, params().u32(n, shape.length).f32(s0, s1)], grid1d(n));
    return out;
  }
  const source = elementwiseShader({ expr, inputs: k, broadcast, helpers: options.helpers });
  const p = params().u32(out.size, shape.length).f32(s0, s1);
  p.u32(...padded(shape, 1));
  for (const t of inputs) p.u32(...padded(broadcastStrides(t.shape, shape), 0));
  launch(op, source, [...inputs, out, p], grid1d(out.size));
  return out;
}

function padded(values: number[], fill: number): number[] {
  return [...values, ...new Array(MAX_RANK - values.length).fill(fill)];
}

/** Strides of `shape` read at coordinates of `outShape` (0 on broadcast dimensions). */
function broadcastStrides(shape: Shape, outShape: Shape): number[] {
  const strides = stridesOf(shape);
  const offset = outShape.length - shape.length;
  return outShape.map((_, d) => {
    const k = d - offset;
    return k < 0 || shape[k] === 1 ? 0 : strides[k];
  });
}

/** Throws unless the two tensors have the same shape. */
export function assertSameShape(op: string, a: Tensor, b: Tensor): void {
  if (!sameShape(a.shape, b.shape)) {
    throw new ShapeError(op, `shapes ${fmt(a.shape)} and ${fmt(b.shape)} must be equal`);
  }
}
