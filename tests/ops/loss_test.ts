import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { fromArray } from "../../src/ops/creation.ts";
import {
  crossEntropy,
  l1Loss,
  logSoftmax,
  lossTunables,
  mseLoss,
  type Reduction,
} from "../../src/ops/loss.ts";
import type { RowVariant } from "../../shaders/loss.ts";
import { checkOp } from "../helpers/check_op.ts";
import { assertClose, type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

const VARIANTS: RowVariant[] = ["thread", "workgroup"];

/** Runs `fn` with the row kernels forced to one variant. */
async function withVariant(variant: RowVariant, fn: () => Promise<void>): Promise<void> {
  const saved = lossTunables.rowVariant;
  lossTunables.rowVariant = variant;
  try {
    await fn();
  } finally {
    lossTunables.rowVariant = saved;
  }
}

// ---- float64 references ---------------------------------------------------------------------

/** Visits the rows of `shape` along `axis`: calls fn(indices of the row's elements). */
function forEachRow(shape: number[], axis: number, fn: (idx: number[]) => void): void {
  const k = shape[axis];
  const inner = shape.slice(axis + 1).reduce((s, d) => s * d, 1);
  const outer = shape.slice(0, axis).reduce((s, d) => s * d, 1);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      fn(Array.from({ length: k }, (_, j) => o * k * inner + j * inner + i));
    }
  }
}

function logSumExp(values: number[]): number {
  const m = Math.max(...values);
  return m + Math.log(values.reduce((s, v) => s + Math.exp(v - m), 0));
}

function refLogSoftmax(x: Nd, axis: number): Nd {
  const y = nd(x.shape);
  forEachRow(x.shape, axis, (idx) => {
    const lse = logSumExp(idx.map((i) => x.data[i]));
    for (const i of idx) y.data[i] = x.data[i] - lse;
  });
  return y;
}

function refLogSoftmaxGrad(dy: Nd, x: Nd, axis: number): Nd {
  const y = refLogSoftmax(x, axis), dx = nd(x.shape);
  forEachRow(x.shape, axis, (idx) => {
    const t = idx.reduce((s, i) => s + dy.data[i], 0);
    for (const i of idx) dx.data[i] = dy.data[i] - Math.exp(y.data[i]) * t;
  });
  return dx;
}

function reduce(values: number[], reduction: Reduction): Nd {
  if (reduction === "none") return nd([values.length], values);
  const s = values.reduce((a, b) => a + b, 0);
  return nd([], [reduction === "mean" ? s / values.length : s]);
}

/** Gradient weight per term: dy (per term for "none", scalar otherwise) times 1/n for a mean. */
function termWeight(dy: Nd, i: number, n: number, reduction: Reduction): number {
  if (reduction === "none") return dy.data[i];
  return reduction === "mean" ? dy.data[0] / n : dy.data[0];
}

function refCrossEntropy(x: Nd, labels: number[], reduction: Reduction): Nd {
  const [n, k] = x.shape;
  const losses = labels.map((label, r) => {
    const row = Array.from(x.data.subarray(r * k, (r + 1) * k));
    return logSumExp(row) - row[label];
  });
  return reduce(losses.slice(0, n), reduction);
}

function refCrossEntropyGrad(dy: Nd, x: Nd, labels: number[], reduction: Reduction): Nd {
  const [n, k] = x.shape;
  const dx = nd(x.shape);
  for (let r = 0; r < n; r++) {
    const row = Array.from(x.data.subarray(r * k, (r + 1) * k));
    const lse = logSumExp(row);
    const w = termWeight(dy, r, n, reduction);
    for (let j = 0; j < k; j++) dx.data[r * k + j] = (Math.exp(row[j] - lse) - (j === labels[r] ? 1 : 0)) * w;
  }
  return dx;
}

function refPointwise(a: Nd, b: Nd, f: (d: number) => number, reduction: Reduction): Nd {
  const r = reduce(Array.from(a.data, (v, i) => f(v - b.data[i])), reduction);
  return reduction === "none" ? nd(a.shape, r.data) : r;
}

function refPointwiseGrad(dy: Nd, a: Nd, b: Nd, df: (d: number) => number, reduction: Reduction): Nd[] {
  const ga = nd(a.shape), gb = nd(a.shape);
  for (let i = 0; i < a.data.length; i++) {
    const g = df(a.data[i] - b.data[i]) * termWeight(dy, i, a.data.length, reduction);
    ga.data[i] = g;
    gb.data[i] = -g;
  }
  return [ga, gb];
}

// ---- tests ----------------------------------------------------------------------------------

const REDUCTIONS: Reduction[] = ["mean", "none", "sum"];

for (const variant of VARIANTS) {
  gpuTest(`logSoftmax (${variant} per row): forward and gradient, any axis, large logits`, async () => {
    const rng = new Rng(11);
    const cases: { shape: number[]; axis: number; range: [number, number] }[] = [
      { shape: [1, 1], axis: -1, range: [-1, 1] },
      { shape: [3, 10], axis: -1, range: [-3, 3] },
      { shape: [2, 1000], axis: 1, range: [-3, 3] },
      { shape: [5, 7], axis: 0, range: [-2, 2] },
      { shape: [2, 5, 3], axis: 1, range: [-2, 2] },
      // exp() overflows f32 past 88.7 and underflows below -103: only a max-shifted softmax survives.
      { shape: [4, 13], axis: -1, range: [-100, 100] },
      { shape: [3, 6], axis: -1, range: [-130, -110] },
      { shape: [9], axis: 0, range: [-1, 1] },
    ];
    await withVariant(variant, async () => {
      for (const { shape, axis, range } of cases) {
        const ax = axis < 0 ? axis + shape.length : axis;
        await checkOp({
          name: `logSoftmax ${JSON.stringify(shape)} axis ${axis} in [${range}]`,
          inputs: [rng.array(shape, ...range)],
          gpu: (x) => logSoftmax(x, axis),
          ref: (x) => refLogSoftmax(x, ax),
          refGrad: (dy, x) => [refLogSoftmaxGrad(dy, x, ax)],
          tol: { rtol: 1e-5, atol: 2e-5 },
          fdSamples: 12,
        });
      }
    });
  });

  gpuTest(`crossEntropy (${variant} per row): forward and gradient for every reduction`, async () => {
    const rng = new Rng(5);
    const cases: { n: number; k: number; range: [number, number] }[] = [
      { n: 1, k: 1, range: [-1, 1] },
      { n: 1, k: 10, range: [-2, 2] },
      { n: 7, k: 10, range: [-3, 3] },
      { n: 3, k: 1000, range: [-4, 4] },
      { n: 130, k: 3, range: [-2, 2] }, // more rows than one workgroup of the "thread" variant
      { n: 5, k: 6, range: [-100, 100] }, // large logits: stable softmax
      { n: 4, k: 5, range: [-130, -110] },
    ];
    await withVariant(variant, async () => {
      for (const { n, k, range } of cases) {
        const labelValues = Array.from({ length: n }, () => rng.int(0, k - 1));
        const labels = fromArray(Int32Array.from(labelValues), [n], "i32");
        const logits = rng.array([n, k], ...range);
        try {
          for (const reduction of REDUCTIONS) {
            await checkOp({
              name: `crossEntropy [${n}, ${k}] in [${range}] ${reduction}`,
              inputs: [logits],
              gpu: (x) => crossEntropy(x, labels, { reduction }),
              ref: (x) => refCrossEntropy(x, labelValues, reduction),
              refGrad: (dy, x) => [refCrossEntropyGrad(dy, x, labelValues, reduction)],
              tol: { rtol: 1e-5, atol: 2e-5 },
              fdSamples: 12,
            });
          }
        } finally {
          labels.dispose();
        }
      }
    });
  });
}

gpuTest("crossEntropy: out-of-range labels give NaN for their row only", async () => {
  const rng = new Rng(9);
  const [n, k] = [4, 5];
  const x = rng.array([n, k], -2, 2);
  const labelValues = [1, 5, -1, 4]; // rows 1 and 2 are out of range
  const logits = fromArray(Float32Array.from(x.data), [n, k]);
  const labels = fromArray(Int32Array.from(labelValues), [n], "i32");
  const seed = fromArray(new Float32Array(n).fill(1), [n]);
  for (const variant of VARIANTS) {
    await withVariant(variant, async () => {
      const { value, grads } = grad((l) => crossEntropy(l, labels, { reduction: "none" }), [logits], seed);
      const loss = await value.toArray(), dx = await grads[0].toArray();
      const ok = [0, 3];
      const expected = refCrossEntropy(
        nd([2, k], [...x.data.subarray(0, k), ...x.data.subarray(3 * k)].map((v) => Math.fround(v))),
        [1, 4],
        "none",
      );
      assertClose([loss[0], loss[3]], expected.data, `${variant}: valid rows`, { rtol: 1e-5, atol: 1e-5 });
      assert.ok(
        Number.isNaN(loss[1]) && Number.isNaN(loss[2]),
        `${variant}: bad rows must be NaN, got ${loss}`,
      );
      for (let j = 0; j < k; j++) {
        assert.ok(Number.isNaN(dx[k + j]) && Number.isNaN(dx[2 * k + j]), `${variant}: bad-row gradient`);
        for (const r of ok) assert.ok(Number.isFinite(dx[r * k + j]), `${variant}: good-row gradient`);
      }
      value.dispose();
      grads[0].dispose();
    });
  }
  for (const t of [logits, labels, seed]) t.dispose();
});

gpuTest("crossEntropy: label dtype, shapes and reduction are validated", () => {
  const logits = fromArray(new Float32Array(6), [2, 3]);
  const f32Labels = fromArray(new Float32Array([0, 1]), [2]);
  const u32Labels = fromArray(new Uint32Array([0, 1]), [2], "u32");
  const short = fromArray(new Int32Array([0]), [1], "i32");
  const column = fromArray(new Int32Array([0, 1]), [2, 1], "i32");
  const good = fromArray(new Int32Array([0, 1]), [2], "i32");
  const flat = fromArray(new Float32Array(3), [3]);
  const empty = fromArray(new Float32Array(0), [2, 0]);
  try {
    assert.throws(() => crossEntropy(logits, f32Labels), /crossEntropy: labels must be i32.*f32\[2\]/);
    assert.throws(() => crossEntropy(logits, u32Labels), /crossEntropy: labels must be i32/);
    assert.throws(() => crossEntropy(logits, short), /crossEntropy: labels must be \[2\].*got \[1\]/);
    assert.throws(() => crossEntropy(logits, column), /crossEntropy: labels must be \[2\].*got \[2, 1\]/);
    assert.throws(() => crossEntropy(flat, good), /crossEntropy: logits must be \[N, K\], got \[3\]/);
    assert.throws(() => crossEntropy(empty, good), /crossEntropy: .*no classes/);
    assert.throws(() => crossEntropy(good as never, good), /crossEntropy: expects f32/);
    assert.throws(
      () => crossEntropy(logits, good, { reduction: "avg" as Reduction }),
      /crossEntropy: reduction must be/,
    );
    assert.throws(() => logSoftmax(logits, 2), /logSoftmax: axis 2 is out of range/);
  } finally {
    for (const t of [logits, f32Labels, u32Labels, short, column, good, flat, empty]) t.dispose();
  }
});

const POINTWISE = [
  { name: "mseLoss", op: mseLoss, f: (d: number) => d * d, df: (d: number) => 2 * d },
  { name: "l1Loss", op: l1Loss, f: Math.abs, df: Math.sign },
];

for (const loss of POINTWISE) {
  gpuTest(`${loss.name}: forward and gradients for every reduction`, async () => {
    const rng = new Rng(21);
    // [3, 1000] and [2, 3, 32, 32] take the two-pass reduction; the others one workgroup.
    for (const shape of [[1], [7], [3, 5], [2, 3, 4, 5], [3, 1000], [2, 3, 32, 32]]) {
      const a = rng.array(shape, -2, 2), b = rng.array(shape, -2, 2);
      for (let i = 0; i < a.data.length; i += 3) b.data[i] = a.data[i]; // ties: gradient 0 for L1
      const big = a.data.length > 200;
      for (const reduction of REDUCTIONS) {
        await checkOp({
          name: `${loss.name} ${JSON.stringify(shape)} ${reduction}`,
          inputs: [a, b],
          gpu: (x, y) => loss.op(x, y, { reduction }),
          ref: (x, y) => refPointwise(x, y, loss.f, reduction),
          refGrad: (dy, x, y) => refPointwiseGrad(dy, x, y, loss.df, reduction),
          tol: { rtol: 1e-5, atol: 1e-5 },
          fdSamples: big ? 4 : 12,
        });
      }
    }
  });
}

gpuTest("pointwise losses: only the inputs that need a gradient get one; shape checks", async () => {
  const rng = new Rng(3);
  const a = rng.array([4, 6]), b = rng.array([4, 6]);
  const ta = fromArray(Float32Array.from(a.data), a.shape),
    tb = fromArray(Float32Array.from(b.data), b.shape);
  // Gradient for a only (b is a constant target).
  const { value, grads } = grad((x) => l1Loss(x, tb), [ta]);
  const expected = refPointwiseGrad(nd([], [1]), a, b, Math.sign, "mean")[0];
  assertClose(await grads[0].toArray(), Float64Array.from(expected.data, Math.fround), "l1 dA", {
    rtol: 1e-6,
  });
  value.dispose();
  grads[0].dispose();
  const other = fromArray(new Float32Array(24), [6, 4]);
  assert.throws(() => mseLoss(ta, other), /mseLoss: shapes \[4, 6\] and \[6, 4\] must be equal/);
  assert.throws(() => l1Loss(ta, tb, { reduction: "max" as Reduction }), /l1Loss: reduction must be/);
  for (const t of [ta, tb, other]) t.dispose();
});
