/** Tensor creation on the GPU: constants and host data. Random tensors are in random.ts. */
import { currentGpu } from "../device/runtime.ts";
import type { DType } from "../tensor/dtype.ts";
import { checkShape, fmt, type Shape, ShapeError, sizeOf } from "../tensor/shape.ts";
import { Tensor } from "../tensor/tensor.ts";
import { bitsOf, fillBits } from "./kernel.ts";

export function full(shape: Shape, value: number, dtype: DType = "f32"): Tensor {
  checkShape("full", shape);
  const t = Tensor.empty(shape, dtype, "full");
  fillBits(t, bitsOf(value, dtype), "full");
  return t;
}

export function zeros(shape: Shape, dtype: DType = "f32"): Tensor {
  return full(shape, 0, dtype);
}

export function ones(shape: Shape, dtype: DType = "f32"): Tensor {
  return full(shape, 1, dtype);
}

export function fullLike(t: Tensor, value: number): Tensor {
  return full(t.shape, value, t.dtype);
}

export function zerosLike(t: Tensor): Tensor {
  return full(t.shape, 0, t.dtype);
}

export function onesLike(t: Tensor): Tensor {
  return full(t.shape, 1, t.dtype);
}

/** Uploads host data. `data` length must equal the shape's size. */
export function fromArray(
  data: ArrayLike<number>,
  shape: Shape = [data.length],
  dtype: DType = data instanceof Int32Array ? "i32" : data instanceof Uint32Array ? "u32" : "f32",
): Tensor {
  checkShape("fromArray", shape);
  if (data.length !== sizeOf(shape)) {
    throw new ShapeError(
      "fromArray",
      `${data.length} values do not fill shape ${fmt(shape)} (${sizeOf(shape)} elements)`,
    );
  }
  const typed = dtype === "f32"
    ? Float32Array.from(data)
    : dtype === "i32"
    ? Int32Array.from(data)
    : Uint32Array.from(data);
  const t = Tensor.empty(shape, dtype, "fromArray");
  if (typed.length) currentGpu().write(t.buffer, typed);
  return t;
}

/** A scalar tensor (shape []). */
export function scalar(value: number, dtype: DType = "f32"): Tensor {
  return full([], value, dtype);
}
