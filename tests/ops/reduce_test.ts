import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { max, mean, min, sum } from "../../src/ops/reduce.ts";
import { type ReducePath, reduceTuning } from "../../src/ops/reduce_axes.ts";
import { argmax, l2NormPerSample, logSumExp } from "../../src/ops/reduce_extra.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { checkOp } from "../helpers/check_op.ts";
import { assertClose, type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

/** Runs `fn` with the reduction strategy forced (and optionally a lower per-lane cap). */
async function withPath(path: ReducePath, fn: () => Promise<void>, maxPerLane?: number): Promise<void> {
  const saved = { ...reduceTuning };
  reduceTuning.path = path;
  if (maxPerLane) reduceTuning.maxPerLane = maxPerLane;
  try {
    await fn();
  } finally {
    Object.assign(reduceTuning, saved);
  }
}

// ---- float64 references ----

/** Reduces `x` over `axes` with `combine`, keeping reduced axes as size 1 when keepDims. */
function reduceRef(
  x: Nd,
  axes: number[],
  keepDims: boolean,
  init: number,
  combine: (acc: number, v: number) => number,
): Nd {
  const kept = x.shape.map((s, d) => (axes.includes(d) ? 1 : s));
  const out = nd(kept, new Array(kept.reduce((a, b) => a * b, 1)).fill(init));
  forEachIndex(x.shape, (k, idx) => {
    const o = idx.reduce((acc, c, d) => acc * kept[d] + (axes.includes(d) ? 0 : c), 0);
    out.data[o] = combine(out.data[o], x.data[k]);
  });
  return keepDims ? out : nd(x.shape.filter((_, d) => !axes.includes(d)), out.data);
}

function forEachIndex(shape: number[], fn: (k: number, idx: number[]) => void): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const idx = new Array(shape.length).fill(0);
  for (let k = 0; k < n; k++) {
    let r = k;
    for (let d = shape.length - 1; d >= 0; d--) {
      idx[d] = r % shape[d];
      r = Math.floor(r / shape[d]);
    }
    fn(k, idx);
  }
}

/** The reduced-shape array `g` read at the reduced coordinates of every element of `shape`. */
function expand(g: Nd, shape: number[], axes: number[]): Nd {
  const kept = shape.map((s, d) => (axes.includes(d) ? 1 : s));
  const out = nd(shape);
  forEachIndex(shape, (k, idx) => {
    out.data[k] = g.data[idx.reduce((acc, c, d) => acc * kept[d] + (axes.includes(d) ? 0 : c), 0)];
  });
  return out;
}

const count = (shape: number[], axes: number[]) => axes.reduce((n, d) => n * shape[d], 1);

// ---- sum / mean / max / min ----

/** Random shapes (rank 1..4, odd sizes) and axis sets, including all axes and negative axes. */
const CASES: { shape: number[]; axes?: number[]; keepDims?: boolean }[] = [
  { shape: [7] },
  { shape: [300], axes: [0] },
  { shape: [3, 5], axes: [1] },
  { shape: [3, 5], axes: [0], keepDims: true },
  { shape: [2, 3, 4], axes: [0, 2] },
  { shape: [2, 3, 4], axes: [-1] },
  { shape: [5, 1, 7], axes: [1] },
  { shape: [3, 5, 7, 11], axes: [0, 2, 3] },
  { shape: [3, 5, 7, 11], axes: [1, 3], keepDims: true },
  { shape: [2, 3, 5, 7] },
];

const normalise = (axes: number[] | undefined, rank: number) =>
  axes === undefined ? [...Array(rank).keys()] : axes.map((a) => (a < 0 ? a + rank : a));

for (const path of ["auto", "lanes", "tree"] as const) {
  gpuTest(`sum, mean: forward and gradient (${path} path)`, () =>
    withPath(path, async () => {
      const rng = new Rng(21);
      for (const { shape, axes, keepDims = false } of CASES) {
        const ax = normalise(axes, shape.length);
        const n = count(shape, ax);
        await checkOp({
          name: `sum ${JSON.stringify(shape)} axes ${JSON.stringify(axes)}`,
          inputs: [rng.array(shape)],
          gpu: (x) => sum(x, { axes, keepDims }),
          ref: (x) => reduceRef(x, ax, keepDims, 0, (a, v) => a + v),
          refGrad: (dy, x) => [expand(dy, x.shape, ax)],
        });
        await checkOp({
          name: `mean ${JSON.stringify(shape)} axes ${JSON.stringify(axes)}`,
          inputs: [rng.array(shape)],
          gpu: (x) => mean(x, { axes, keepDims }),
          ref: (x) => reduceRef(x, ax, keepDims, 0, (a, v) => a + v / n),
          refGrad: (dy, x) => [nd(x.shape, expand(dy, x.shape, ax).data.map((v) => v / n))],
        });
      }
    }));

  gpuTest(`max, min: forward and gradient (${path} path)`, () =>
    withPath(path, async () => {
      const rng = new Rng(22);
      for (const { shape, axes, keepDims = false } of CASES) {
        const ax = normalise(axes, shape.length);
        for (const [name, op, pick] of [["max", max, Math.max], ["min", min, Math.min]] as const) {
          await checkOp({
            name: `${name} ${JSON.stringify(shape)} axes ${JSON.stringify(axes)}`,
            // Distinct values (random): the extremum is unique, so finite differences work.
            inputs: [rng.array(shape)],
            gpu: (x) => op(x, { axes, keepDims }),
            ref: (x) => reduceRef(x, ax, keepDims, pick === Math.max ? -Infinity : Infinity, pick),
            refGrad: (dy, x) => {
              const m = expand(
                reduceRef(x, ax, true, pick === Math.max ? -Infinity : Infinity, pick),
                x.shape,
                ax,
              );
              const g = expand(dy, x.shape, ax);
              return [nd(x.shape, x.data.map((v, i) => (v === m.data[i] ? g.data[i] : 0)))];
            },
          });
        }
      }
    }));
}

// ---- large reductions (the chunked multi-pass paths) ----

/** Float64 sum and sum of |x| per output (the error scale of an f32 sum). */
function sumWithScale(x: Nd, axes: number[]): { sum: Nd; scale: Nd } {
  return {
    sum: reduceRef(x, axes, false, 0, (a, v) => a + v),
    scale: reduceRef(x, axes, false, 0, (a, v) => a + Math.abs(v)),
  };
}

async function checkLarge(shape: number[], axes: number[] | undefined, what: string): Promise<void> {
  const rng = new Rng(3);
  const x = rng.array(shape);
  const ax = normalise(axes, shape.length);
  const t = fromArray(Float32Array.from(x.data), shape);
  const xs = nd(shape, Float32Array.from(x.data));
  const { sum: expected, scale } = sumWithScale(xs, ax);
  const s = sum(t, { axes });
  const got = await s.toArray();
  // f32 summation error grows with the sum of magnitudes, not with the (cancelling) result.
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i] - expected.data[i]);
    assert.ok(err <= 1e-5 * scale.data[i], `${what}: sum[${i}] = ${got[i]}, expected ${expected.data[i]}`);
  }
  const m = max(t, { axes });
  assertClose(await m.toArray(), reduceRef(xs, ax, false, -Infinity, Math.max).data, `${what}: max`, {
    rtol: 0,
    atol: 0,
  });
  [t, s, m].forEach((u) => u.dispose());
}

for (const path of ["auto", "lanes", "tree"] as const) {
  gpuTest(`large reductions match float64 (${path} path)`, () =>
    withPath(path, async () => {
      // 200k elements to a scalar: more than llvmpipe's 65,535 loop iterations per lane.
      await checkLarge([200_003], undefined, `sum 200003 (${path})`);
      // Per-channel batch statistics of NCHW.
      await checkLarge([16, 3, 67, 71], [0, 2, 3], `NCHW per channel (${path})`);
      // Few outputs, strided reduced axis.
      await checkLarge([70_001, 3], [0], `axis 0 of [70001, 3] (${path})`);
    }));
}

gpuTest("reductions split over several passes (low per-lane cap)", async () => {
  for (const path of ["lanes", "tree"] as const) {
    // With at most 2 elements per lane, 5000 elements need a chain of passes.
    await withPath(path, () => checkLarge([5_001], undefined, `sum 5001 (${path}, cap 2)`), 2);
    await withPath(path, () => checkLarge([4, 3, 29, 31], [0, 2, 3], `NCHW (${path}, cap 3)`), 3);
  }
  // mean divides once, in the last pass.
  await withPath("lanes", async () => {
    const x = fromArray(new Float32Array(1000).fill(2));
    const m = mean(x);
    assert.equal(await m.item(), 2);
    [x, m].forEach((t) => t.dispose());
  }, 4);
});

gpuTest(
  "max/min: infinities stay infinite, NaN wins, ties split the gradient (as PyTorch's amax)",
  async () => {
    for (const path of ["lanes", "tree"] as const) {
      await withPath(path, async () => {
        const x = fromArray([-Infinity, -Infinity, 1, 2, 1, NaN, Infinity, Infinity], [4, 2]);
        const [mx, mn] = [max(x, { axes: 1 }), min(x, { axes: 1 })];
        assert.deepEqual(Array.from(await mx.toArray()), [-Infinity, 2, NaN, Infinity], `max (${path})`);
        assert.deepEqual(Array.from(await mn.toArray()), [-Infinity, 1, NaN, Infinity], `min (${path})`);
        [x, mx, mn].forEach((t) => t.dispose());
      });
    }
    // Ties: row [3, 3, 1, 1] -> each 3 gets half of dy; min over [1, 5, 1, 1] gives each 1 a third.
    const x = fromArray([3, 3, 1, 1, 5, 1, 1, 0], [2, 4]);
    const { value: vMax, grads: [dMax] } = grad((t) => sum(max(t, { axes: 1 })), [x]);
    assert.deepEqual(Array.from(await dMax.toArray()), [0.5, 0.5, 0, 0, 1, 0, 0, 0]);
    const y = fromArray([1, 5, 1, 1]);
    const { value: vMin, grads: [dMin] } = grad((t) => min(t), [y]);
    assertClose(await dMin.toArray(), [1 / 3, 0, 1 / 3, 1 / 3], "min ties", { rtol: 1e-6, atol: 0 });
    [x, vMax, dMax, y, vMin, dMin].forEach((t) => t.dispose());
  },
);

// ---- argmax ----

function argmaxRef(x: Nd, axis: number): number[] {
  const inner = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const len = x.shape[axis];
  const nOut = x.data.length / len;
  const out: number[] = [];
  for (let o = 0; o < nOut; o++) {
    const base = Math.floor(o / inner) * len * inner + (o % inner);
    let best = 0;
    for (let k = 1; k < len; k++) if (x.data[base + k * inner] > x.data[base + best * inner]) best = k;
    out.push(best);
  }
  return out;
}

gpuTest("argmax: random shapes, every axis", async () => {
  const rng = new Rng(9);
  for (const shape of [[7], [3, 10], [2, 5, 3], [3, 4, 5, 7], [300, 3]]) {
    for (let axis = 0; axis < shape.length; axis++) {
      const x = nd(shape, Float32Array.from(rng.array(shape).data));
      const t = fromArray(Float32Array.from(x.data), shape);
      const a = argmax(t, axis);
      assert.equal(a.dtype, "i32");
      assert.deepEqual(a.shape, shape.filter((_, d) => d !== axis));
      assert.deepEqual(Array.from(await a.toArray()), argmaxRef(x, axis), `argmax ${shape} axis ${axis}`);
      [t, a].forEach((u) => u.dispose());
    }
  }
});

gpuTest("argmax: first index on ties, NaN wins, keepDims and negative axes", async () => {
  const t = fromArray([5, 3, 3, 0, 5, 5, 1, 2, -1, 5, 3, 2], [3, 4]);
  const a = argmax(t, -1);
  assert.deepEqual(Array.from(await a.toArray()), [0, 0, 1]);
  const k = argmax(t, 0, true);
  assert.deepEqual(k.shape, [1, 4]);
  assert.deepEqual(Array.from(await k.toArray()), [0, 1, 0, 1]);
  const n = fromArray([1, NaN, 7, NaN], [1, 4]);
  const an = argmax(n, 1);
  assert.deepEqual(Array.from(await an.toArray()), [1]);
  [t, a, k, n, an].forEach((u) => u.dispose());
});

// ---- l2NormPerSample ----

function l2Ref(x: Nd): Nd {
  const n = x.shape[0], per = x.data.length / n;
  const out = nd([n]);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < per; j++) s += x.data[i * per + j] ** 2;
    out.data[i] = Math.sqrt(s);
  }
  return out;
}

gpuTest("l2NormPerSample: forward and gradient", async () => {
  const rng = new Rng(13);
  for (const shape of [[4], [3, 7], [2, 3, 5, 7], [1, 3, 11, 13], [3, 300]]) {
    await checkOp({
      name: `l2NormPerSample ${JSON.stringify(shape)}`,
      // Away from 0 so |x| (rank 1) has a derivative.
      inputs: [nd(shape, rng.array(shape).data.map((v) => v + Math.sign(v) * 0.1))],
      gpu: l2NormPerSample,
      ref: l2Ref,
      refGrad: (dy, x) => {
        const norm = l2Ref(x), per = x.data.length / x.shape[0];
        return [
          nd(
            x.shape,
            x.data.map((v, i) => dy.data[Math.floor(i / per)] * v / norm.data[Math.floor(i / per)]),
          ),
        ];
      },
    });
  }
});

gpuTest("l2NormPerSample: a zero sample has norm 0 and gradient 0", async () => {
  const x = fromArray([0, 0, 0, 3, 4, 0], [2, 3]);
  const dy = fromArray([1, 2]);
  const { value, grads: [dx] } = grad((t: Tensor) => l2NormPerSample(t), [x], dy);
  assertClose(await value.toArray(), [0, 5], "norms");
  assertClose(await dx.toArray(), [0, 0, 0, 1.2, 1.6, 0], "gradient");
  [x, dy, value, dx].forEach((t) => t.dispose());
});

// ---- logSumExp ----

function logSumExpRef(x: Nd, axis: number, keepDims: boolean): Nd {
  const m = reduceRef(x, [axis], true, -Infinity, Math.max);
  const me = expand(m, x.shape, [axis]);
  const s = reduceRef(
    nd(x.shape, x.data.map((v, i) => Math.exp(v - me.data[i]))),
    [axis],
    true,
    0,
    (a, v) => a + v,
  );
  const out = nd(m.shape, m.data.map((v, i) => v + Math.log(s.data[i])));
  return keepDims ? out : nd(x.shape.filter((_, d) => d !== axis), out.data);
}

gpuTest("logSumExp: forward and gradient (softmax * dy)", async () => {
  const rng = new Rng(17);
  const cases: [number[], number, boolean][] = [
    [[7], 0, false],
    [[3, 10], 1, false],
    [[2, 5, 3], 1, true],
    [[3, 4, 5, 7], -1, false],
    [[300, 3], 0, false],
  ];
  for (const [shape, axis, keepDims] of cases) {
    const ax = axis < 0 ? axis + shape.length : axis;
    await checkOp({
      name: `logSumExp ${JSON.stringify(shape)} axis ${axis}`,
      inputs: [rng.array(shape, -3, 3)],
      gpu: (x) => logSumExp(x, axis, keepDims),
      ref: (x) => logSumExpRef(x, ax, keepDims),
      refGrad: (dy, x) => {
        const y = expand(logSumExpRef(x, ax, true), x.shape, [ax]);
        const kept = x.shape.map((s, d) => (d === ax ? 1 : s));
        const g = expand(nd(kept, dy.data), x.shape, [ax]);
        return [nd(x.shape, x.data.map((v, i) => g.data[i] * Math.exp(v - y.data[i])))];
      },
    });
  }
});

gpuTest("logSumExp: stable for large magnitudes", async () => {
  const x = fromArray([1000, 1000, -1000, 50, 0, -Infinity], [2, 3]);
  const y = logSumExp(x, 1);
  assertClose(await y.toArray(), [1000 + Math.log(2), 50 + Math.log(1 + Math.exp(-50))], "logSumExp", {
    rtol: 1e-6,
  });
  [x, y].forEach((t) => t.dispose());
});

gpuTest("logSumExp: several +inf give +inf; a NaN gives NaN", async () => {
  const x = fromArray([Infinity, Infinity, 1, 2, NaN, 3, -Infinity, -Infinity, 0], [3, 3]);
  const y = await logSumExp(x, 1).toArray();
  assert.equal(y[0], Infinity);
  assert.ok(Number.isNaN(y[1]));
  assert.equal(y[2], 0);
  x.dispose();
});

gpuTest("max, min over all elements: a NaN takes the gradient (as torch.max(x).backward())", async () => {
  for (const op of [max, min]) {
    const x = fromArray([1, NaN, 3, -2], [4]);
    const { grads: [dx] } = grad((t) => op(t), [x]);
    assert.deepEqual([...await dx.toArray()], [0, 1, 0, 0], op.name);
    x.dispose();
    dx.dispose();
  }
});

// ---- errors ----

gpuTest("reductions: errors name the op and the shapes; empty axes", async (gpu) => {
  const x = fromArray([1, 2, 3, 4, 5, 6], [2, 3]);
  const s = fromArray([1], []);
  assert.throws(() => sum(x, { axes: 2 }), /sum: axis 2 is out of range for a tensor of rank 2/);
  assert.throws(() => mean(x, { axes: [-3] }), /mean: axis -3 is out of range for a tensor of rank 2/);
  assert.throws(() => argmax(x, 2), /argmax: axis 2 is out of range for a tensor of rank 2/);
  assert.throws(() => argmax(s, 0), /argmax: needs a tensor of rank >= 1, got a scalar \[\]/);
  assert.throws(() => logSumExp(x, -3), /logSumExp: axis -3 is out of range for a tensor of rank 2/);
  assert.throws(() => l2NormPerSample(s), /l2NormPerSample: needs a batch \[N, \.\.\.\], got a scalar \[\]/);
  const e = fromArray([], [2, 0]);
  assert.throws(() => max(e, { axes: 1 }), /max: cannot take max over an empty axis of \[2, 0\]/);
  assert.throws(() => argmax(e, 1), /argmax: axis 1 of \[2, 0\] is empty/);
  // Over an empty axis a sum is 0 and a mean NaN (0/0), as in PyTorch.
  const [es, em] = [sum(e, { axes: 1 }), mean(e, { axes: 1 })];
  assert.deepEqual([Array.from(await es.toArray()), Array.from(await em.toArray())], [[0, 0], [NaN, NaN]]);
  [es, em].forEach((t) => t.dispose());
  if (gpu.adapterClass === "cpu") {
    // llvmpipe's loop limit: longer axes would silently be cut short.
    const long = fromArray(new Float32Array(40_000), [1, 40_000]);
    assert.throws(
      () => logSumExp(long, 1),
      /logSumExp: axis 1 of \[1, 40000\] has 40000 elements; on CPU adapters/,
    );
    long.dispose();
  }
  [x, s, e].forEach((t) => t.dispose());
});
