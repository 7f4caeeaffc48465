/**
 * Shape ops with their gradient rules. Reshapes are free (a new view of the same buffer);
 * slice, concat and permute move data with one strided-copy kernel (shaders/shape_ops.ts).
 * They work for every dtype (the kernel copies 32-bit words); gradients flow through f32.
 *
 * Gradients: reshape reshapes back; clone passes dy through; slice puts dy into a zero tensor of
 * the input's shape; concat slices dy back into its inputs' pieces; permute applies the inverse
 * permutation.
 */
import { COPY_MAX_RANK, stridedCopyShader } from "../../shaders/shape_ops.ts";
import { record } from "../autograd/tape.ts";
import { currentGpu } from "../device/runtime.ts";
import { fmt, normAxis, type Shape, ShapeError, sizeOf, stridesOf } from "../tensor/shape.ts";
import { checkNotDisposed, type Tensor } from "../tensor/tensor.ts";
import { fillBits, grid1d, launch, output, params } from "./kernel.ts";

// ---- the strided copy ----

/**
 * Elements each invocation of the copy kernel moves along the innermost dimension. On CPU
 * adapters longer runs amortise the integer divisions that locate a run; on GPUs one element
 * per lane keeps neighbouring lanes on neighbouring addresses.
 */
export const copyTuning = { run: { cpu: 8, gpu: 1 } };

interface CopyDim {
  size: number;
  src: number;
  dst: number;
}

/**
 * Copies the block `shape` from `src` (starting at word `srcOffset`, with `srcStrides`) into
 * `dst` (at `dstOffset`, with `dstStrides`). Size-1 dimensions are dropped and neighbours
 * that are contiguous in both tensors merged, so e.g. a channel slice of NCHW is a rank-2 copy.
 */
function stridedCopy(
  op: string,
  src: Tensor,
  dst: Tensor,
  shape: Shape,
  srcOffset: number,
  srcStrides: number[],
  dstOffset: number,
  dstStrides: number[],
): void {
  const n = sizeOf(shape);
  if (n === 0) return;
  const dims: CopyDim[] = [];
  shape.forEach((size, d) => {
    if (size === 1) return;
    const inner = { size, src: srcStrides[d], dst: dstStrides[d] };
    const outer = dims[dims.length - 1];
    if (outer && outer.src === inner.size * inner.src && outer.dst === inner.size * inner.dst) {
      dims[dims.length - 1] = { size: outer.size * inner.size, src: inner.src, dst: inner.dst };
    } else dims.push(inner);
  });
  if (dims.length === 0) dims.push({ size: 1, src: 1, dst: 1 });
  const inner = dims[dims.length - 1].size;
  const run = Math.min(copyTuning.run[currentGpu().adapterClass], inner);
  const runsPerRow = Math.ceil(inner / run);
  const nRuns = (n / inner) * runsPerRow;
  const pad = (v: number[]) => [...v, ...new Array(COPY_MAX_RANK - v.length).fill(0)];
  const p = params()
    .u32(nRuns, dims.length, srcOffset, dstOffset)
    .u32(run, runsPerRow, 0, 0)
    .u32(...pad(dims.map((d) => d.size)))
    .u32(...pad(dims.map((d) => d.src)))
    .u32(...pad(dims.map((d) => d.dst)));
  launch(op, stridedCopyShader, [src, dst, p], grid1d(nRuns));
}

function checkRank(op: string, x: Tensor): void {
  if (x.rank > COPY_MAX_RANK) {
    throw new ShapeError(op, `rank ${x.rank} of ${fmt(x.shape)} exceeds the supported ${COPY_MAX_RANK}`);
  }
  checkNotDisposed(op, x);
}

/** Offset of coordinate `begin` in a contiguous tensor of `shape`. */
function offsetOf(shape: Shape, begin: number[]): number {
  const strides = stridesOf(shape);
  return begin.reduce((o, b, d) => o + b * strides[d], 0);
}

/** Copies the block at `begin` of size `size` out of `x` into a new contiguous tensor. */
function sliceCopy(op: string, x: Tensor, begin: number[], size: number[]): Tensor {
  const out = output(op, size, x.dtype);
  stridedCopy(op, x, out, size, offsetOf(x.shape, begin), stridesOf(x.shape), 0, stridesOf(size));
  return out;
}

/** A zero tensor of `shape` with `block` written at `begin` (the adjoint of sliceCopy). */
function padCopy(op: string, block: Tensor, shape: Shape, begin: number[]): Tensor {
  const out = output(op, shape, block.dtype);
  fillBits(out, 0, op);
  stridedCopy(
    op,
    block,
    out,
    block.shape,
    0,
    stridesOf(block.shape),
    offsetOf(shape, begin),
    stridesOf(shape),
  );
  return out;
}

// ---- reshapes (free) ----

/**
 * The same data with another shape; one dimension may be -1 (inferred). Shares the buffer.
 * (`x.view(shape)` is the same op, as a method.)
 */
export function reshape(x: Tensor, shape: Shape): Tensor {
  return x.view(shape, "reshape");
}

/** Merges dimensions startDim.. into one: [N, C, H, W] -> [N, C*H*W] for startDim = 1. */
export function flatten(x: Tensor, startDim = 1): Tensor {
  if (x.rank === 0) return reshape(x, [1]);
  const s = normAxis("flatten", startDim, x.rank);
  return reshape(x, [...x.shape.slice(0, s), sizeOf(x.shape.slice(s))]);
}

/** Inserts a dimension of size 1 at `axis` (negative counts from the end of the result). */
export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = normAxis("unsqueeze", axis, x.rank + 1);
  return reshape(x, [...x.shape.slice(0, a), 1, ...x.shape.slice(a)]);
}

/** Removes the size-1 dimension `axis`, or every size-1 dimension when omitted. */
export function squeeze(x: Tensor, axis?: number): Tensor {
  if (axis === undefined) return reshape(x, x.shape.filter((d) => d !== 1));
  const a = normAxis("squeeze", axis, x.rank);
  if (x.shape[a] !== 1) {
    throw new ShapeError("squeeze", `dimension ${axis} of ${fmt(x.shape)} has size ${x.shape[a]}, not 1`);
  }
  return reshape(x, x.shape.filter((_, d) => d !== a));
}

// ---- data-moving ops ----

/**
 * A copy of `x` in a buffer of its own (PyTorch's `clone`), any dtype; the gradient passes
 * through unchanged. Unlike a view, writing into one later leaves the other as it was: the way
 * to keep a value a recorded op saved while the original is updated in place.
 */
export function clone(x: Tensor): Tensor {
  const op = "clone";
  const out = output(op, x.shape, x.dtype);
  // Both are contiguous: one run over every element.
  stridedCopy(op, x, out, [x.size], 0, [1], 0, [1]);
  return record(op, [x], out, (dy) => [dy.alias()], []);
}

/**
 * The block of `x` starting at `begin` with extent `size` (-1: to the end of that dimension),
 * as a new contiguous tensor. Gradient: dy placed at `begin` in zeros of x's shape.
 */
export function slice(x: Tensor, begin: number[], size: number[]): Tensor {
  const op = "slice";
  checkRank(op, x);
  if (begin.length !== x.rank || size.length !== x.rank) {
    throw new ShapeError(
      op,
      `begin ${fmt(begin)} and size ${fmt(size)} must each have one entry per dimension of ${fmt(x.shape)}`,
    );
  }
  const extent = size.map((s, d) => (s === -1 ? x.shape[d] - begin[d] : s));
  x.shape.forEach((dim, d) => {
    const b = begin[d], s = extent[d];
    if (!Number.isInteger(b) || !Number.isInteger(s) || b < 0 || s < 0 || b + s > dim) {
      throw new ShapeError(
        op,
        `block begin ${fmt(begin)} size ${fmt(size)} does not fit in ${fmt(x.shape)} (dimension ${d})`,
      );
    }
  });
  const out = sliceCopy(op, x, begin, extent);
  return record(op, [x], out, (dy) => [padCopy(`${op}.backward`, dy, x.shape, begin)], []);
}

/**
 * Splits `x` along `axis` into pieces of the given sizes (they must add up to the dimension).
 * Each piece is its own slice, so each is its own node on the tape.
 */
export function split(x: Tensor, sizes: number[], axis: number): Tensor[] {
  const a = normAxis("split", axis, x.rank);
  const total = sizes.reduce((n, s) => n + s, 0);
  if (sizes.some((s) => !Number.isInteger(s) || s < 0) || total !== x.shape[a]) {
    throw new ShapeError(
      "split",
      `sizes ${fmt(sizes)} (sum ${total}) must be integers >= 0 adding up to dimension ${axis} of ${
        fmt(x.shape)
      } (${x.shape[a]})`,
    );
  }
  let start = 0;
  return sizes.map((s) => {
    const begin = x.shape.map((_, d) => (d === a ? start : 0));
    const size = x.shape.map((dim, d) => (d === a ? s : dim));
    start += s;
    return slice(x, begin, size);
  });
}

/**
 * Joins tensors along `axis`; all other dimensions must match (e.g. channel concat of NCHW
 * feature maps with axis 1). Gradient: each input gets its slice of dy.
 */
export function concat(tensors: Tensor[], axis: number): Tensor {
  const op = "concat";
  if (tensors.length === 0) throw new ShapeError(op, "needs at least one tensor");
  const first = tensors[0];
  tensors.forEach((t) => checkRank(op, t));
  const a = normAxis(op, axis, first.rank);
  tensors.forEach((t, i) => {
    const same = t.rank === first.rank && t.shape.every((d, k) => k === a || d === first.shape[k]);
    if (!same || t.dtype !== first.dtype) {
      throw new ShapeError(
        op,
        `tensor ${i} is ${t.describe()} but tensor 0 is ${first.describe()}; ` +
          `dtypes and all dimensions except axis ${axis} must match`,
      );
    }
  });
  const shape = [...first.shape];
  shape[a] = tensors.reduce((n, t) => n + t.shape[a], 0);
  const out = output(op, shape, first.dtype);
  const outStrides = stridesOf(shape);
  const starts: number[] = [];
  let start = 0;
  for (const t of tensors) {
    starts.push(start);
    stridedCopy(op, t, out, t.shape, 0, stridesOf(t.shape), start * outStrides[a], outStrides);
    start += t.shape[a];
  }
  return record(
    op,
    tensors,
    out,
    (dy) =>
      tensors.map((t, i) =>
        sliceCopy(`${op}.backward`, dy, shape.map((_, d) => (d === a ? starts[i] : 0)), [...t.shape])
      ),
    [],
  );
}

/** Reorders dimensions: output dimension d is input dimension dims[d]. Gradient: the inverse. */
export function permute(x: Tensor, dims: number[]): Tensor {
  const op = "permute";
  checkRank(op, x);
  const normal = dims.map((d) => (Number.isInteger(d) && d < 0 ? d + x.rank : d));
  const isPermutation = dims.length === x.rank &&
    normal.every((d) => Number.isInteger(d) && d >= 0 && d < x.rank) && new Set(normal).size === x.rank;
  if (!isPermutation) {
    throw new ShapeError(
      op,
      `dims ${fmt(dims)} are not a permutation of the ${x.rank} dimensions of ${fmt(x.shape)}`,
    );
  }
  const shape = normal.map((d) => x.shape[d]);
  const strides = stridesOf(x.shape);
  const out = output(op, shape, x.dtype);
  stridedCopy(op, x, out, shape, 0, normal.map((d) => strides[d]), 0, stridesOf(shape));
  const inverse = new Array<number>(x.rank);
  normal.forEach((d, k) => (inverse[d] = k));
  return record(op, [x], out, (dy) => [permute(dy, inverse)], []);
}

/** The transpose of a matrix [M, N] -> [N, M]. */
export function transpose2d(x: Tensor): Tensor {
  if (x.rank !== 2) throw new ShapeError("transpose2d", `expects a matrix, got ${x.describe()}`);
  return permute(x, [1, 0]);
}
