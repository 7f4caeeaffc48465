import assert from "node:assert/strict";
import { fromArray } from "../../src/ops/creation.ts";
import {
  clone,
  concat,
  copyTuning,
  flatten,
  permute,
  reshape,
  slice,
  split,
  squeeze,
  transpose2d,
  unsqueeze,
} from "../../src/ops/shape_ops.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { fillBits } from "../../src/ops/kernel.ts";
import { checkOp } from "../helpers/check_op.ts";
import { type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

// ---- float64 references, written with explicit coordinates ----

function coords(k: number, shape: number[]): number[] {
  const c = new Array(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    c[d] = k % shape[d];
    k = Math.floor(k / shape[d]);
  }
  return c;
}

const flat = (c: number[], shape: number[]) => c.reduce((o, v, d) => o * shape[d] + v, 0);

function sliceRef(x: Nd, begin: number[], size: number[]): Nd {
  const out = nd(size);
  for (let k = 0; k < out.data.length; k++) {
    out.data[k] = x.data[flat(coords(k, size).map((v, d) => v + begin[d]), x.shape)];
  }
  return out;
}

/** Zeros of `shape` with `block` added at `begin` (the adjoint of sliceRef). */
function padRef(block: Nd, shape: number[], begin: number[]): Nd {
  const out = nd(shape);
  for (let k = 0; k < block.data.length; k++) {
    out.data[flat(coords(k, block.shape).map((v, d) => v + begin[d]), shape)] += block.data[k];
  }
  return out;
}

function concatRef(xs: Nd[], axis: number): Nd {
  const shape = [...xs[0].shape];
  shape[axis] = xs.reduce((n, x) => n + x.shape[axis], 0);
  const out = nd(shape);
  let start = 0;
  for (const x of xs) {
    const p = padRef(x, shape, shape.map((_, d) => (d === axis ? start : 0)));
    p.data.forEach((v, i) => (out.data[i] += v));
    start += x.shape[axis];
  }
  return out;
}

function permuteRef(x: Nd, dims: number[]): Nd {
  const shape = dims.map((d) => x.shape[d]);
  const out = nd(shape);
  for (let k = 0; k < out.data.length; k++) {
    const c = coords(k, shape);
    const src = new Array(x.shape.length);
    dims.forEach((d, j) => (src[d] = c[j]));
    out.data[k] = x.data[flat(src, x.shape)];
  }
  return out;
}

const inverse = (dims: number[]) => dims.map((_, d) => dims.indexOf(d));

// ---- reshape family ----

gpuTest("reshape, flatten, squeeze, unsqueeze: shapes, shared buffers and gradients", async () => {
  const rng = new Rng(1);
  const cases: [number[], (x: Tensor) => Tensor, number[]][] = [
    [[2, 3, 4, 5], (x) => reshape(x, [6, -1]), [6, 20]],
    [[2, 3, 4, 5], (x) => reshape(x, [-1]), [120]],
    [[301], (x) => reshape(x, [7, 43]), [7, 43]],
    [[2, 3, 4, 5], (x) => flatten(x), [2, 60]],
    [[2, 3, 4, 5], (x) => flatten(x, 2), [2, 3, 20]],
    [[2, 3, 4, 5], (x) => flatten(x, 0), [120]],
    [[2, 3, 4, 5], (x) => flatten(x, -1), [2, 3, 4, 5]],
    [[3, 1, 5], (x) => squeeze(x), [3, 5]],
    [[3, 1, 5], (x) => squeeze(x, -2), [3, 5]],
    [[3, 5], (x) => unsqueeze(x, 1), [3, 1, 5]],
    [[3, 5], (x) => unsqueeze(x, -1), [3, 5, 1]],
  ];
  for (const [shape, op, expected] of cases) {
    await checkOp({
      name: `reshape ${JSON.stringify(shape)} -> ${JSON.stringify(expected)}`,
      inputs: [rng.array(shape)],
      gpu: op,
      ref: (x) => nd(expected, x.data),
      refGrad: (dy, x) => [nd(x.shape, dy.data)],
    });
  }
  const x = fromArray([1, 2, 3, 4, 5, 6], [2, 3]);
  const y = reshape(x, [3, -1]);
  assert.deepEqual(y.shape, [3, 2]);
  assert.equal(y.buffer, x.buffer, "reshape shares the buffer (no copy)");
  [x, y].forEach((t) => t.dispose());
});

// ---- slice and split ----

gpuTest("clone: a copy in its own buffer, any dtype; the gradient passes through", async () => {
  const rng = new Rng(8);
  for (const shape of [[1], [7], [3, 5], [2, 3, 4, 5], [1, 2, 1, 3, 1, 2]]) {
    await checkOp({
      name: `clone ${JSON.stringify(shape)}`,
      inputs: [rng.array(shape)],
      gpu: (x) => clone(x),
      ref: (x) => x,
      refGrad: (dy) => [dy],
    });
  }
  // Integer tensors copy bit for bit, and the copy does not follow later writes to the original.
  const labels = fromArray(Int32Array.from([3, -1, 2147483647]));
  const copy = clone(labels);
  fillBits(labels, 0);
  assert.equal(copy.dtype, "i32");
  assert.deepEqual([...await copy.toArray()], [3, -1, 2147483647]);
  assert.deepEqual([...await labels.toArray()], [0, 0, 0]);
  labels.dispose();
  copy.dispose();
});

gpuTest("slice: random blocks of rank 1..4, forward and gradient", async () => {
  const rng = new Rng(2);
  const shapes = [[9], [300], [5, 7], [3, 4, 5], [2, 5, 6, 7], [3, 1, 4, 33]];
  for (const shape of shapes) {
    for (let trial = 0; trial < 3; trial++) {
      const begin = shape.map((d) => rng.int(0, d - 1));
      // Mix explicit extents with -1 (to the end).
      const size = shape.map((d, i) => (rng.next() < 0.3 ? -1 : rng.int(1, d - begin[i])));
      const extent = size.map((s, i) => (s === -1 ? shape[i] - begin[i] : s));
      await checkOp({
        name: `slice ${JSON.stringify(shape)} begin ${JSON.stringify(begin)} size ${JSON.stringify(size)}`,
        inputs: [rng.array(shape)],
        gpu: (x) => slice(x, begin, size),
        ref: (x) => sliceRef(x, begin, extent),
        refGrad: (dy, x) => [padRef(dy, x.shape, begin)],
      });
    }
  }
});

gpuTest("split: pieces are slices; all of them carry gradient", async () => {
  const rng = new Rng(3);
  const cases: [number[], number[], number][] = [
    [[10], [3, 0, 7], 0],
    [[2, 7, 3, 5], [2, 4, 1], 1],
    [[4, 3, 29], [10, 19], -1],
  ];
  for (const [shape, sizes, axis] of cases) {
    const a = axis < 0 ? axis + shape.length : axis;
    const pieces = (x: Nd) => {
      let start = 0;
      return sizes.map((s) => {
        const begin = shape.map((_, d) => (d === a ? start : 0));
        start += s;
        return sliceRef(x, begin, shape.map((dim, d) => (d === a ? s : dim)));
      });
    };
    // Reassemble the pieces in reverse order, so the result depends on every piece.
    await checkOp({
      name: `split ${JSON.stringify(shape)} ${JSON.stringify(sizes)} axis ${axis}`,
      inputs: [rng.array(shape)],
      gpu: (x) => concat(split(x, sizes, axis).reverse(), axis),
      ref: (x) => concatRef(pieces(x).reverse(), a),
      refGrad: (dy, x) => {
        // Adjoint: cut dy into the reversed pieces and put each back where it came from.
        const rev = [...sizes].reverse();
        let start = 0, back = sizes.reduce((n, s) => n + s, 0);
        const g = nd(x.shape);
        for (const s of rev) {
          back -= s;
          const part = sliceRef(
            dy,
            shape.map((_, d) => (d === a ? start : 0)),
            shape.map((dim, d) => (d === a ? s : dim)),
          );
          padRef(part, x.shape, shape.map((_, d) => (d === a ? back : 0))).data.forEach((
            v,
            i,
          ) => (g.data[i] += v));
          start += s;
        }
        return [g];
      },
    });
  }
  const x = fromArray([1, 2, 3, 4, 5, 6], [2, 3]);
  const parts = split(x, [1, 2], 1);
  assert.deepEqual(parts.map((p) => p.shape), [[2, 1], [2, 2]]);
  assert.deepEqual(Array.from(await parts[1].toArray()), [2, 3, 5, 6]);
  [x, ...parts].forEach((t) => t.dispose());
});

// ---- concat ----

gpuTest("concat: channel concat of NCHW and other axes, forward and gradients", async () => {
  const rng = new Rng(4);
  const cases: [number[][], number][] = [
    [[[2, 3, 5, 7], [2, 4, 5, 7], [2, 1, 5, 7]], 1], // channel concat (dense blocks, U-Nets)
    [[[1, 2, 3, 3], [1, 5, 3, 3]], 1], // batch 1
    [[[3, 5], [4, 5]], 0],
    [[[3, 5], [3, 2], [3, 1]], -1],
    [[[7], [300], [1]], 0],
    [[[2, 3, 4], [2, 3, 4]], 2],
  ];
  for (const [shapes, axis] of cases) {
    const a = axis < 0 ? axis + shapes[0].length : axis;
    await checkOp({
      name: `concat ${JSON.stringify(shapes)} axis ${axis}`,
      inputs: shapes.map((s) => rng.array(s)),
      gpu: (...xs) => concat(xs, axis),
      ref: (...xs) => concatRef(xs, a),
      refGrad: (dy, ...xs) => {
        let start = 0;
        return xs.map((x) => {
          const begin = x.shape.map((_, d) => (d === a ? start : 0));
          start += x.shape[a];
          return sliceRef(dy, begin, x.shape);
        });
      },
    });
  }
});

// ---- permute ----

gpuTest("permute and transpose2d: forward and gradient", async () => {
  const rng = new Rng(5);
  const cases: [number[], number[]][] = [
    [[5, 7], [1, 0]],
    [[2, 3, 4], [2, 0, 1]],
    [[2, 3, 4], [0, 2, 1]],
    [[2, 3, 5, 7], [0, 2, 3, 1]], // NCHW -> NHWC
    [[2, 5, 7, 3], [0, 3, 1, 2]], // NHWC -> NCHW
    [[3, 1, 4, 5], [3, 2, 1, 0]],
    [[4, 3], [-1, -2]],
  ];
  for (const [shape, dims] of cases) {
    const normal = dims.map((d) => (d < 0 ? d + shape.length : d));
    await checkOp({
      name: `permute ${JSON.stringify(shape)} ${JSON.stringify(dims)}`,
      inputs: [rng.array(shape)],
      gpu: (x) => permute(x, dims),
      ref: (x) => permuteRef(x, normal),
      refGrad: (dy) => [permuteRef(dy, inverse(normal))],
    });
  }
  await checkOp({
    name: "transpose2d [17, 31]",
    inputs: [rng.array([17, 31])],
    gpu: transpose2d,
    ref: (x) => permuteRef(x, [1, 0]),
    refGrad: (dy) => [permuteRef(dy, [1, 0])],
  });
});

gpuTest("strided copy: every run length (the GPU setting is 1 element per lane)", async () => {
  const rng = new Rng(6);
  const saved = copyTuning.run.cpu;
  try {
    for (const run of [1, 3, 64]) {
      copyTuning.run.cpu = run;
      await checkOp({
        name: `concat run ${run}`,
        inputs: [rng.array([2, 3, 5, 7]), rng.array([2, 2, 5, 7])],
        gpu: (a, b) => concat([a, b], 1),
        ref: (a, b) => concatRef([a, b], 1),
        refGrad: (dy, a, b) => [sliceRef(dy, [0, 0, 0, 0], a.shape), sliceRef(dy, [0, 3, 0, 0], b.shape)],
      });
      await checkOp({
        name: `permute run ${run}`,
        inputs: [rng.array([2, 5, 7, 3])],
        gpu: (x) => permute(x, [0, 3, 1, 2]),
        ref: (x) => permuteRef(x, [0, 3, 1, 2]),
        refGrad: (dy) => [permuteRef(dy, inverse([0, 3, 1, 2]))],
      });
    }
  } finally {
    copyTuning.run.cpu = saved;
  }
});

gpuTest("shape ops move any dtype exactly (i32 labels)", async () => {
  const x = fromArray(new Int32Array([1, -2, 3, 2147483647, -2147483648, 6]), [2, 3]);
  const y = fromArray(new Int32Array([7, 8]), [2, 1]);
  const c = concat([x, y], 1);
  assert.equal(c.dtype, "i32");
  assert.deepEqual(Array.from(await c.toArray()), [1, -2, 3, 7, 2147483647, -2147483648, 6, 8]);
  const s = slice(c, [1, 1], [1, -1]);
  assert.deepEqual(Array.from(await s.toArray()), [-2147483648, 6, 8]);
  const t = transpose2d(x);
  assert.deepEqual(Array.from(await t.toArray()), [1, 2147483647, -2, -2147483648, 3, 6]);
  [x, y, c, s, t].forEach((u) => u.dispose());
});

// ---- errors ----

gpuTest("shape ops: errors name the op and the shapes", () => {
  const x = fromArray(new Float32Array(6), [2, 3]);
  const a = fromArray(new Float32Array(30), [2, 3, 5]);
  const b = fromArray(new Float32Array(40), [2, 4, 5]);
  const c = fromArray(new Float32Array(36), [2, 3, 6]);
  const i = fromArray(new Int32Array(30), [2, 3, 5]);
  assert.throws(() => reshape(x, [4, 2]), /reshape: cannot reshape \[2, 3\] \(6 elements\) into \[4, 2\]/);
  assert.throws(() => reshape(x, [4, -1]), /reshape: cannot reshape \[2, 3\] \(6 elements\) into \[4, -1\]/);
  assert.throws(() => reshape(x, [-1, -1]), /reshape: invalid target shape \[-1, -1\]/);
  assert.throws(() => flatten(x, 2), /flatten: axis 2 is out of range for a tensor of rank 2/);
  assert.throws(() => squeeze(x, 0), /squeeze: dimension 0 of \[2, 3\] has size 2, not 1/);
  assert.throws(() => concat([a, c], 1), /concat: tensor 1 is f32\[2, 3, 6\] but tensor 0 is f32\[2, 3, 5\]/);
  assert.throws(() => concat([a, b], 2), /concat: tensor 1 is f32\[2, 4, 5\] .* except axis 2 must match/);
  assert.throws(() => concat([a, x], 0), /concat: tensor 1 is f32\[2, 3\] but tensor 0 is f32\[2, 3, 5\]/);
  assert.throws(() => concat([a, i], 0), /concat: tensor 1 is i32\[2, 3, 5\] but tensor 0 is f32\[2, 3, 5\]/);
  assert.throws(() => concat([a, b], 3), /concat: axis 3 is out of range for a tensor of rank 3/);
  assert.throws(() => concat([], 0), /concat: needs at least one tensor/);
  assert.throws(
    () => slice(x, [1, 2], [2, 1]),
    /slice: block begin \[1, 2\] size \[2, 1\] does not fit in \[2, 3\] \(dimension 0\)/,
  );
  assert.throws(
    () => slice(x, [0], [1]),
    /slice: begin \[0\] and size \[1\] must each have one entry per dimension of \[2, 3\]/,
  );
  assert.throws(
    () => split(x, [1, 1], 1),
    /split: sizes \[1, 1\] \(sum 2\) must be .* dimension 1 of \[2, 3\] \(3\)/,
  );
  assert.throws(
    () => permute(a, [0, 0, 1]),
    /permute: dims \[0, 0, 1\] are not a permutation of the 3 dimensions of \[2, 3, 5\]/,
  );
  assert.throws(() => transpose2d(a), /transpose2d: expects a matrix, got f32\[2, 3, 5\]/);
  [x, a, b, c, i].forEach((t) => t.dispose());
});
