/** Element types. f32 for values; i32/u32 for labels, indices and masks. All are 4 bytes. */
export type DType = "f32" | "i32" | "u32";

export type TypedArrayFor<D extends DType> = D extends "f32" ? Float32Array<ArrayBuffer>
  : D extends "i32" ? Int32Array<ArrayBuffer>
  : Uint32Array<ArrayBuffer>;

export const BYTES_PER_ELEMENT = 4;

export function typedArray(dtype: DType, buffer: ArrayBuffer): Float32Array | Int32Array | Uint32Array {
  if (dtype === "f32") return new Float32Array(buffer);
  if (dtype === "i32") return new Int32Array(buffer);
  return new Uint32Array(buffer);
}
