/**
 * The attack kernels (src/attacks/projection.ts, shaders/attack.ts) against float64 references,
 * and the EOT/BPDA gradient (src/attacks/gradient.ts) against explicit computations on linear
 * models. Samples inside and outside the ball, zero gradients, pixels at the box edges,
 * per-sample step sizes, and samples longer than one reduction lane (split reductions).
 */
import assert from "node:assert/strict";
import { lossGradient, lossValue, resolveLoss } from "../../src/attacks/gradient.ts";
import {
  clip01,
  disposeBest,
  initBest,
  keepBest,
  l2Step,
  misclassified,
  perSampleDistance,
  perSampleNorm,
  projectL2,
  projectLinf,
  randomStart,
  selectPerSample,
  signStep,
} from "../../src/attacks/projection.ts";
import type { Model } from "../../src/attacks/types.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { rand, randn } from "../../src/ops/random.ts";
import { reduceTuning } from "../../src/ops/reduce_axes.ts";
import { tidy } from "../../src/tensor/scope.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";
import { linearModel } from "./toy_models.ts";

// ---- float64 references (one sample = one row of D values) ----

type Rows = Float64Array[];

const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
const l2 = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((s, a) => s + a * a, 0));
const linf = (v: ArrayLike<number>) => Array.from(v).reduce((s, a) => Math.max(s, Math.abs(a)), 0);
const rowsOf = (a: ArrayLike<number>, n: number): Rows => {
  const d = a.length / n;
  return Array.from({ length: n }, (_, k) => Float64Array.from(Array.from(a).slice(k * d, (k + 1) * d)));
};
const flat = (rows: Rows) => Float64Array.from(rows.flatMap((r) => Array.from(r)));
const alphaOf = (alpha: number | number[], k: number) => typeof alpha === "number" ? alpha : alpha[k];

function refSignStep(x: Rows, g: Rows, alpha: number | number[], x0: Rows, eps: number): Rows {
  return x.map((row, k) =>
    row.map((v, i) =>
      clamp(
        v + alphaOf(alpha, k) * Math.sign(g[k][i]),
        Math.max(x0[k][i] - eps, 0),
        Math.min(x0[k][i] + eps, 1),
      )
    )
  );
}

function refProjectL2Delta(delta: Rows, x0: Rows, eps: number): Rows {
  return delta.map((dk, k) => {
    const n = l2(dk);
    const scale = n > eps ? eps / n : 1;
    return dk.map((v, i) => clamp(x0[k][i] + v * scale, 0, 1));
  });
}

function refL2Step(x: Rows, g: Rows, alpha: number | number[], x0: Rows, eps: number): Rows {
  const delta = x.map((row, k) => {
    const gn = l2(g[k]);
    return row.map((v, i) => v + alphaOf(alpha, k) * g[k][i] / (gn + 1e-12) - x0[k][i]);
  });
  return refProjectL2Delta(delta, x0, eps);
}

// ---- test data -----------------------------------------------------------------------------------

/**
 * A batch of n samples of shape [c, h, w]: clean images x0 with pixels exactly at 0 and 1, a
 * current iterate x (sample 0 well inside the ball, sample 1 far outside, the rest random),
 * and a gradient with exact zeros (sample n−1 entirely zero).
 */
function makeBatch(rng: Rng, n: number, shape: number[], eps: number) {
  const d = shape.reduce((a, b) => a * b, 1);
  const x0 = new Float32Array(n * d), x = new Float32Array(n * d), g = new Float32Array(n * d);
  for (let k = 0; k < n; k++) {
    for (let i = 0; i < d; i++) {
      const j = k * d + i;
      const r = rng.next();
      x0[j] = r < 0.15 ? 0 : r < 0.3 ? 1 : rng.next();
      const spread = k === 0 ? 0.1 * eps / Math.sqrt(d) : k === 1 ? 3 * eps : rng.uniform(0, 2) * eps;
      x[j] = clamp(x0[j] + spread * rng.uniform(), 0, 1);
      g[j] = k === n - 1 || rng.next() < 0.1 ? 0 : rng.uniform();
    }
  }
  const full = [n, ...shape];
  return {
    x0: fromArray(x0, full),
    x: fromArray(x, full),
    g: fromArray(g, full),
    ref: { x0: rowsOf(x0, n), x: rowsOf(x, n), g: rowsOf(g, n) },
    full,
  };
}

async function rows(t: Tensor): Promise<Rows> {
  return rowsOf(await t.toArray(), t.shape[0]);
}

// Shapes: not multiples of the 256-wide workgroup, batch 1, and one sample (3·40·40 = 4,800)
// longer than a reduction lane's 4,096 elements, so its norms are split into chunks.
const SHAPES: [number, number[]][] = [[4, [1, 5, 7]], [1, [3, 4, 4]], [3, [3, 40, 40]], [5, [2, 3, 3]]];

gpuTest("signStep (L∞ step + box projection) matches the float64 reference", async () => {
  const rng = new Rng(1);
  for (const [n, shape] of SHAPES) {
    for (const eps of [0.03, 0.3]) {
      const b = makeBatch(rng, n, shape, eps);
      const alpha = eps / 4;
      const out = signStep(b.x, b.g, alpha, b.x0, eps);
      assertClose(
        await out.toArray(),
        flat(refSignStep(b.ref.x, b.ref.g, alpha, b.ref.x0, eps)),
        `signStep ${n}x[${shape}]`,
        {
          rtol: 0,
          atol: 1e-6,
        },
      );
      // Per-sample step sizes.
      const alphas = Array.from({ length: n }, (_, k) => (k + 1) * eps / 3);
      const at = fromArray(alphas);
      const out2 = signStep(b.x, b.g, at, b.x0, eps);
      assertClose(
        await out2.toArray(),
        flat(refSignStep(b.ref.x, b.ref.g, alphas, b.ref.x0, eps)),
        "signStep per-sample",
        {
          rtol: 0,
          atol: 1e-6,
        },
      );
      for (const t of [b.x0, b.x, b.g, out, out2, at]) t.dispose();
    }
  }
});

gpuTest("l2Step (normalised step, ball projection, clip) matches the float64 reference", async () => {
  const rng = new Rng(2);
  for (const [n, shape] of SHAPES) {
    for (const eps of [0.25, 2]) {
      const b = makeBatch(rng, n, shape, eps);
      for (const alpha of [eps / 5, 3 * eps]) {
        const out = l2Step(b.x, b.g, alpha, b.x0, eps);
        const expected = refL2Step(b.ref.x, b.ref.g, alpha, b.ref.x0, eps);
        assertClose(await out.toArray(), flat(expected), `l2Step ${n}x[${shape}] eps ${eps} alpha ${alpha}`, {
          rtol: 1e-5,
          atol: 2e-6,
        });
        const norms = await perSampleDistance(out, b.x0, "l2").toArray();
        for (const v of norms) assert.ok(v <= eps * (1 + 1e-6) + 1e-6, `‖δ‖ ${v} > eps ${eps}`);
        out.dispose();
      }
      const alphas = Array.from({ length: n }, (_, k) => (k + 1) * eps / 4);
      const at = fromArray(alphas);
      const out = l2Step(b.x, b.g, at, b.x0, eps);
      assertClose(
        await out.toArray(),
        flat(refL2Step(b.ref.x, b.ref.g, alphas, b.ref.x0, eps)),
        "l2Step per-sample",
        {
          rtol: 1e-5,
          atol: 2e-6,
        },
      );
      for (const t of [b.x0, b.x, b.g, out, at]) t.dispose();
    }
  }
});

gpuTest("a zero gradient leaves a point inside the ball where it is", async () => {
  const rng = new Rng(3);
  const b = makeBatch(rng, 3, [2, 6, 6], 0.5);
  const zero = fromArray(new Float32Array(b.x.size), b.full);
  // Inside a huge ball: unchanged (L2 up to the rounding of x0 + (x − x0), one ulp).
  const ulp = { rtol: 0, atol: 1.2e-7 };
  assertClose(await projectL2(b.x, b.x0, 1e3).toArray(), await b.x.toArray(), "projectL2 inside", ulp);
  assertClose(await projectLinf(b.x, b.x0, 1e3).toArray(), await b.x.toArray(), "projectLinf inside", {
    rtol: 0,
    atol: 0,
  });
  const still = signStep(b.x, zero, 0.1, b.x0, 1e3);
  assertClose(await still.toArray(), await b.x.toArray(), "zero-gradient sign step", { rtol: 0, atol: 0 });
  assertClose(
    await l2Step(b.x, zero, 0.1, b.x0, 1e3).toArray(),
    await b.x.toArray(),
    "zero-gradient l2 step",
    ulp,
  );
});

gpuTest("projectL2, projectLinf and clip01 match the float64 reference", async () => {
  const rng = new Rng(4);
  for (const [n, shape] of SHAPES) {
    const eps = 0.4;
    const b = makeBatch(rng, n, shape, eps);
    // A point partly outside the box too.
    const wild = b.ref.x.map((r) => r.map((v) => v + rng.uniform(-0.3, 0.3)));
    const xw = fromArray(Float32Array.from(flat(wild)), b.full);
    const w32 = rowsOf(await xw.toArray(), n);
    const delta = w32.map((r, k) => r.map((v, i) => v - b.ref.x0[k][i]));
    assertClose(
      await projectL2(xw, b.x0, eps).toArray(),
      flat(refProjectL2Delta(delta, b.ref.x0, eps)),
      "projectL2",
      {
        rtol: 1e-5,
        atol: 2e-6,
      },
    );
    const linfRef = w32.map((r, k) =>
      r.map((v, i) => clamp(v, Math.max(b.ref.x0[k][i] - eps, 0), Math.min(b.ref.x0[k][i] + eps, 1)))
    );
    assertClose(await projectLinf(xw, b.x0, eps).toArray(), flat(linfRef), "projectLinf", {
      rtol: 0,
      atol: 1e-6,
    });
    assertClose(await clip01(xw).toArray(), flat(w32.map((r) => r.map((v) => clamp(v, 0, 1)))), "clip01", {
      rtol: 0,
      atol: 0,
    });
    for (const t of [b.x0, b.x, b.g, xw]) t.dispose();
  }
});

gpuTest("perSampleNorm and perSampleDistance, incl. split reductions and the GPU (tree) path", async () => {
  const rng = new Rng(5);
  const saved = { ...reduceTuning };
  try {
    // 64 per lane: every sample is cut into many chunks; "tree": the real-GPU variant.
    for (const [perLane, path] of [[saved.maxPerLane, "auto"], [64, "auto"], [64, "tree"]] as const) {
      reduceTuning.maxPerLane = perLane;
      reduceTuning.path = path;
      for (const [n, shape] of SHAPES) {
        const b = makeBatch(rng, n, shape, 0.3);
        const g = rowsOf(await b.g.toArray(), n);
        assertClose(await perSampleNorm(b.g, "l2").toArray(), g.map(l2), "perSampleNorm l2", {
          rtol: 1e-5,
          atol: 1e-7,
        });
        assertClose(await perSampleNorm(b.g, "linf").toArray(), g.map(linf), "perSampleNorm linf", {
          rtol: 0,
          atol: 0,
        });
        const x = await rows(b.x), x0 = await rows(b.x0);
        const diff = x.map((r, k) => r.map((v, i) => v - x0[k][i]));
        assertClose(
          await perSampleDistance(b.x, b.x0, "l2").toArray(),
          diff.map(l2),
          "perSampleDistance l2",
          {
            rtol: 1e-5,
            atol: 1e-7,
          },
        );
        assertClose(
          await perSampleDistance(b.x, b.x0, "linf").toArray(),
          diff.map(linf),
          "perSampleDistance linf",
          {
            rtol: 1e-6,
            atol: 1e-7,
          },
        );
        for (const t of [b.x0, b.x, b.g]) t.dispose();
      }
    }
  } finally {
    Object.assign(reduceTuning, saved);
  }
});

gpuTest("randomStart: PGD U(−ε,ε), APGD ε·u/max|u| and L2 Gaussian starts match their formulas", async () => {
  const rng = new Rng(6);
  for (const [n, shape] of SHAPES) {
    const b = makeBatch(rng, n, shape, 0.1);
    const x = await rows(b.x);
    const eps = 0.1;
    // PGD: the same Philox draw the start uses, regenerated by rand().
    const start = randomStart(b.x, { norm: "linf", eps }, 42, { stream: 3 });
    const u = rowsOf(await rand(b.full, { seed: 42, stream: 3, low: -eps, high: eps }).toArray(), n);
    assertClose(
      await start.toArray(),
      flat(x.map((r, k) => r.map((v, i) => clamp(v + u[k][i], 0, 1)))),
      "pgd start",
      {
        rtol: 0,
        atol: 1e-6,
      },
    );
    // APGD: u ~ U(−1, 1) scaled so its largest coordinate has size ε.
    const apgd = randomStart(b.x, { norm: "linf", eps }, 42, { stream: 4, style: "apgd" });
    const v = rowsOf(await rand(b.full, { seed: 42, stream: 4, low: -1, high: 1 }).toArray(), n);
    const vMax = v.map(linf);
    const apgdRef = x.map((r, k) => r.map((xv, i) => clamp(xv + v[k][i] * eps / (vMax[k] + 1e-12), 0, 1)));
    assertClose(await apgd.toArray(), flat(apgdRef), "apgd start", { rtol: 0, atol: 1e-6 });
    // L2: Gaussian direction of norm ε (before clipping).
    const epsL2 = 0.5;
    const l2s = randomStart(b.x, { norm: "l2", eps: epsL2 }, 7, { stream: 1 });
    const gs = rowsOf(await randn(b.full, { seed: 7, stream: 1 }).toArray(), n);
    const gNorm = gs.map(l2);
    const l2Ref = x.map((r, k) => r.map((xv, i) => clamp(xv + gs[k][i] * epsL2 / (gNorm[k] + 1e-12), 0, 1)));
    assertClose(await l2s.toArray(), flat(l2Ref), "l2 start", { rtol: 1e-5, atol: 1e-6 });
    // Inside the ball and the box.
    for (const [t, norm, e] of [[start, "linf", eps], [apgd, "linf", eps], [l2s, "l2", epsL2]] as const) {
      const d = await perSampleDistance(t, b.x, norm).toArray();
      for (const dv of d) assert.ok(dv <= e + 1e-6, `${norm} start moved ${dv} > ${e}`);
      for (const p of await t.toArray()) assert.ok(p >= 0 && p <= 1, `start pixel ${p} outside [0,1]`);
    }
    for (const t of [b.x0, b.x, b.g, start, apgd, l2s]) t.dispose();
  }
  // Fresh draws without a seed; the same seed and stream repeat.
  const x = fromArray(new Float32Array(64).fill(0.5), [2, 32]);
  const [a, c, s1, s2] = [
    randomStart(x, { norm: "linf", eps: 0.1 }),
    randomStart(x, { norm: "linf", eps: 0.1 }),
    randomStart(x, { norm: "l2", eps: 0.1 }, 5),
    randomStart(x, { norm: "l2", eps: 0.1 }, 5),
  ];
  assert.notDeepEqual(await a.toArray(), await c.toArray());
  assert.deepEqual(await s1.toArray(), await s2.toArray());
});

gpuTest("selectPerSample and keepBest follow the per-sample rule", async () => {
  const rng = new Rng(7);
  const n = 6, d = 37;
  const mask = [1, 0, 0, 1, 1, 0];
  const a = Float32Array.from({ length: n * d }, () => rng.uniform());
  const b = Float32Array.from({ length: n * d }, () => rng.uniform());
  const sel = selectPerSample(fromArray(mask), fromArray(a, [n, d]), fromArray(b, [n, d]));
  const expected = Float32Array.from({ length: n * d }, (_, i) => mask[Math.floor(i / d)] ? a[i] : b[i]);
  assertClose(await sel.toArray(), expected, "selectPerSample", { rtol: 0, atol: 0 });

  // Keep-best over a sequence of iterates vs the host rule.
  const best = initBest(fromArray(a, [n, 1, d]));
  let refLoss = new Array(n).fill(-Infinity), refMis = new Array(n).fill(-1);
  let refX: Float32Array = new Float32Array(n * d);
  const losses = [
    [0.5, 1, 2, 0.1, NaN, 3],
    [0.7, 0.5, 2, 0.2, 1, 3],
    [0.6, 4, 1, 0.3, 2, 2],
    [0.9, 3, 9, -1, 0, 5],
  ];
  const flags = [
    [0, 0, 0, 0, 0, 1],
    [0, 1, 0, 0, 0, 0],
    [0, 0, 0, 1, 0, 1],
    [0, 0, 0, 1, 1, 0],
  ];
  for (let t = 0; t < losses.length; t++) {
    const xt = Float32Array.from({ length: n * d }, () => rng.uniform());
    tidy(() => keepBest(best, fromArray(xt, [n, 1, d]), fromArray(losses[t]), fromArray(flags[t])));
    for (let k = 0; k < n; k++) {
      const [l, m] = [losses[t][k], flags[t][k]];
      if (m > refMis[k] || (m === refMis[k] && l > refLoss[k])) {
        refLoss[k] = Math.fround(l);
        refMis[k] = m;
        refX.set(xt.subarray(k * d, (k + 1) * d), k * d);
      }
    }
  }
  assertClose(await best.x.toArray(), refX, "keepBest x", { rtol: 0, atol: 0 });
  assertClose(await best.loss.toArray(), refLoss, "keepBest loss", { rtol: 0, atol: 0 });
  assertClose(await best.misclassified.toArray(), refMis, "keepBest flags", { rtol: 0, atol: 0 });
  // Sample 1 was misclassified at t = 1 and keeps that iterate despite higher losses later;
  // sample 4 starts with a NaN loss, which never wins on loss.
  assert.deepEqual(refMis, [0, 1, 0, 1, 1, 1]);
  assert.deepEqual(refLoss.slice(0, 3), [0.9, 0.5, 9].map(Math.fround));
  disposeBest(best);
  refX = new Float32Array(0);
  refLoss = refMis = [];

  const logits = fromArray([1, 2, 0, 3, 0, 1, 5, 5, 1], [3, 3]);
  assert.deepEqual(Array.from(await misclassified(logits, fromArray([1, 1, 0], [3], "i32")).toArray()), [
    0,
    1,
    0,
  ]);
});

gpuTest("shape and argument errors name the op and the fix", () => {
  const x = fromArray(new Float32Array(12), [2, 6]);
  const y = fromArray(new Float32Array(10), [2, 5]);
  assert.throws(
    () => signStep(x, y, 0.1, x, 0.1),
    /signStep.*gradient has shape \[2, 5\], expected \[2, 6\]/,
  );
  assert.throws(() => l2Step(x, x, fromArray([1, 2, 3]), x, 0.1), /l2Step.*one value per sample \(\[2\]\)/);
  assert.throws(() => projectLinf(x, x, -1), /projectLinf: eps must be finite and >= 0/);
  assert.throws(() => selectPerSample(fromArray([1]), x, x), /selectPerSample.*mask/);
  assert.throws(() => signStep(x, x, NaN, x, 0.1), /step size must be finite/);
  assert.throws(() => resolveLoss("pgd", "hinge" as "ce"), /unknown loss 'hinge'/);
  assert.throws(() => lossGradient((t) => t, x, y, undefined, { eot: 0 }), /eot must be an integer >= 1/);
});

// ---- the EOT / BPDA gradient on linear models (explicit float64 gradients) ----

const N = 5, D = 18, K = 4;

function randomLinear(rng: Rng) {
  const w = Float32Array.from({ length: D * K }, () => rng.uniform());
  const b = Float32Array.from({ length: K }, () => rng.uniform(-0.2, 0.2));
  return { w, b, model: linearModel(w, b, D, K) };
}

/** Logits, CE per sample, and d(Σ CE)/dx for a linear model, in float64. */
function refLinearCe(w: Float32Array, b: Float32Array, x: Float32Array, y: number[]) {
  const loss: number[] = [], grad = new Float64Array(N * D), logits: number[] = [];
  for (let n = 0; n < N; n++) {
    const z = Array.from(
      { length: K },
      (_, k) =>
        b[k] + Array.from({ length: D }, (_, i) => x[n * D + i] * w[i * K + k]).reduce((s, v) => s + v, 0),
    );
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
    loss.push(lse - z[y[n]]);
    logits.push(...z);
    const p = z.map((v) => Math.exp(v - lse));
    p[y[n]] -= 1;
    for (let i = 0; i < D; i++) grad[n * D + i] = p.reduce((s, pk, k) => s + pk * w[i * K + k], 0);
  }
  return { loss, grad, logits };
}

gpuTest("lossGradient: CE gradient, EOT mean and averageLogits of a deterministic model", async () => {
  const rng = new Rng(8);
  const lin = randomLinear(rng);
  const xs = Float32Array.from({ length: N * D }, () => rng.next());
  const labels = [0, 3, 1, 2, 3];
  const x = fromArray(xs, [N, 2, 3, 3]), y = fromArray(labels, [N], "i32");
  const ref = refLinearCe(lin.w, lin.b, xs, labels);
  for (const options of [{}, { eot: 3 }, { eot: 2, averageLogits: true }]) {
    const { grad, loss, logits } = lossGradient(lin.model, x, y, undefined, options);
    const what = JSON.stringify(options);
    assertClose(await grad.toArray(), ref.grad, `grad ${what}`, { rtol: 1e-4, atol: 1e-6 });
    assertClose(await loss.toArray(), ref.loss, `loss ${what}`, { rtol: 1e-5, atol: 1e-6 });
    assertClose(await logits.toArray(), ref.logits, `logits ${what}`, { rtol: 1e-5, atol: 1e-6 });
    const value = lossValue(lin.model, x, y, undefined, options);
    assertClose(await value.loss.toArray(), ref.loss, `lossValue ${what}`, { rtol: 1e-5, atol: 1e-6 });
  }
  // The margin loss maximised by attacks: max_{i≠y} z_i − z_y, gradient w_m − w_y.
  const { grad, loss } = lossGradient(lin.model, x, y, resolveLoss("test", "margin"));
  const z = ref.logits;
  const other = labels.map((c, n) =>
    [0, 1, 2, 3].filter((k) => k !== c).reduce((m, k) => z[n * K + k] > z[n * K + m] ? k : m, c === 0 ? 1 : 0)
  );
  assertClose(await loss.toArray(), labels.map((c, n) => z[n * K + other[n]] - z[n * K + c]), "margin loss", {
    rtol: 1e-5,
    atol: 1e-6,
  });
  const mg = Float64Array.from({ length: N * D }, (_, j) => {
    const n = Math.floor(j / D), i = j % D;
    return lin.w[i * K + other[n]] - lin.w[i * K + labels[n]];
  });
  assertClose(await grad.toArray(), mg, "margin grad", { rtol: 1e-5, atol: 1e-6 });
});

gpuTest("lossGradient with a random model: EOT mean over draws; averageLogits differs", async () => {
  const rng = new Rng(9);
  const lin = randomLinear(rng);
  const xs = Float32Array.from({ length: N * D }, () => rng.next());
  const labels = [1, 1, 2, 0, 3];
  const x = fromArray(xs, [N, D]), y = fromArray(labels, [N], "i32");
  // A model whose randomness is a host-side draw we can replay: logits scaled by 1 or 3,
  // alternating per call (so E = 2 sees one of each).
  let calls = 0;
  const scaledModel: Model = (t) => {
    const s = calls++ % 2 === 0 ? 1 : 3;
    const ws = lin.w.map((v) => v * s), bs = lin.b.map((v) => v * s);
    return linearModel(ws, bs, D, K)(t);
  };
  const r1 = refLinearCe(lin.w, lin.b, xs, labels);
  const r3 = refLinearCe(lin.w.map((v) => v * 3), lin.b.map((v) => v * 3), xs, labels);
  calls = 0;
  const eot = lossGradient(scaledModel, x, y, undefined, { eot: 2 });
  assertClose(await eot.grad.toArray(), r1.grad.map((v, i) => (v + r3.grad[i]) / 2), "EOT grad", {
    rtol: 1e-4,
    atol: 1e-6,
  });
  assertClose(await eot.loss.toArray(), r1.loss.map((v, i) => (v + r3.loss[i]) / 2), "EOT loss", {
    rtol: 1e-5,
    atol: 1e-6,
  });
  // averageLogits: the mean logits are those of scale 2.
  calls = 0;
  const avg = lossGradient(scaledModel, x, y, undefined, { eot: 2, averageLogits: true });
  const r2 = refLinearCe(lin.w.map((v) => v * 2), lin.b.map((v) => v * 2), xs, labels);
  assertClose(await avg.grad.toArray(), r2.grad, "averageLogits grad", { rtol: 1e-4, atol: 1e-6 });
  assertClose(await avg.loss.toArray(), r2.loss, "averageLogits loss", { rtol: 1e-5, atol: 1e-6 });
});

gpuTest("BPDA: the loss comes from the model, the gradient from the surrogate", async () => {
  const rng = new Rng(10);
  const f = randomLinear(rng), s = randomLinear(rng);
  const xs = Float32Array.from({ length: N * D }, () => rng.next());
  const labels = [2, 0, 1, 3, 3];
  const x = fromArray(xs, [N, 1, D]), y = fromArray(labels, [N], "i32");
  const rf = refLinearCe(f.w, f.b, xs, labels), rs = refLinearCe(s.w, s.b, xs, labels);
  for (
    const options of [{ surrogate: s.model }, { surrogate: s.model, eot: 2 }, {
      surrogate: s.model,
      averageLogits: true,
      eot: 2,
    }]
  ) {
    const { grad, loss, logits } = lossGradient(f.model, x, y, undefined, options);
    assertClose(await grad.toArray(), rs.grad, "BPDA grad = surrogate's", { rtol: 1e-4, atol: 1e-6 });
    assertClose(await loss.toArray(), rf.loss, "BPDA loss = model's", { rtol: 1e-5, atol: 1e-6 });
    assertClose(await logits.toArray(), rf.logits, "BPDA logits = model's", { rtol: 1e-5, atol: 1e-6 });
  }
});

gpuTest("lossGradient leaks no tensors", async (gpu) => {
  const rng = new Rng(11);
  const lin = randomLinear(rng);
  const x = fromArray(Float32Array.from({ length: N * D }, () => rng.next()), [N, D]);
  const y = fromArray([0, 1, 2, 3, 0], [N], "i32");
  const run = () =>
    tidy(() => {
      for (const options of [{}, { eot: 3 }, { eot: 2, averageLogits: true }, { surrogate: lin.model }]) {
        lossGradient(lin.model, x, y, undefined, options);
        lossValue(lin.model, x, y, undefined, options);
      }
    });
  run();
  const before = gpu.memory().bytesInUse;
  for (let i = 0; i < 5; i++) run();
  assert.equal(gpu.memory().bytesInUse, before);
  await x.toArray();
});
