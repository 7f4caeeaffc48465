/**
 * Square attack: schedule and pattern against the original's formulas, the threat-model
 * invariants (‖δ‖ ≤ ε, [0,1], no NaN), the random-search rules (the margin never rises, samples
 * already misclassified are frozen), reproducibility by seed, and that it really attacks a trained
 * classifier while a white-box PGD does at least as well.
 */
import assert from "node:assert/strict";
import { marginLoss } from "../../src/attacks/losses.ts";
import { pgd } from "../../src/attacks/pgd.ts";
import { metaPseudoGaussian, square, squareP } from "../../src/attacks/square.ts";
import type { Model, ThreatModel } from "../../src/attacks/types.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { tidy } from "../../src/tensor/scope.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";
import { accuracyOf, noisyModel, trainedClassifierHead } from "./toy_models.ts";

const BATCH = 40;

function fixture(): Promise<{ model: Model; x: Tensor; y: Tensor }> {
  return trainedClassifierHead(BATCH);
}

async function margins(model: Model, x: Tensor, y: Tensor): Promise<Float32Array> {
  const m = tidy(() => marginLoss(model(x), y));
  const v = await m.toArray() as Float32Array;
  m.dispose();
  return v;
}

/** Asserts x_adv ∈ [0,1], no NaN, and ‖x_adv − x‖ ≤ ε per sample. */
async function assertInBall(xAdv: Tensor, x: Tensor, threat: ThreatModel): Promise<void> {
  const a = await xAdv.toArray(), b = await x.toArray();
  const d = a.length / x.shape[0];
  for (let n = 0; n < x.shape[0]; n++) {
    let linf = 0, l2 = 0;
    for (let i = n * d; i < (n + 1) * d; i++) {
      assert.ok(a[i] >= 0 && a[i] <= 1, `x_adv[${i}] = ${a[i]} outside [0,1]`);
      linf = Math.max(linf, Math.abs(a[i] - b[i]));
      l2 += (a[i] - b[i]) ** 2;
    }
    const norm = threat.norm === "linf" ? linf : Math.sqrt(l2);
    assert.ok(norm <= threat.eps * (1 + 1e-5) + 1e-6, `sample ${n}: ‖δ‖ = ${norm} > ε = ${threat.eps}`);
  }
}

gpuTest(
  "square: p schedule halves at the original's iterations (AutoAttack's: not rescaled by default)",
  () => {
    assert.equal(squareP(0.8, 0, 10000), 0.8);
    assert.equal(squareP(0.8, 10, 10000), 0.8);
    assert.equal(squareP(0.8, 11, 10000), 0.4);
    assert.equal(squareP(0.8, 50, 10000), 0.4);
    assert.equal(squareP(0.8, 51, 10000), 0.2);
    assert.equal(squareP(0.8, 201, 10000), 0.1);
    assert.equal(squareP(0.8, 8001, 10000), 0.8 / 512);
    // 5,000 queries (AutoAttack's): the same iterations; the last halving reached is after 4000.
    assert.equal(squareP(0.8, 11, 5000), 0.4);
    assert.equal(squareP(0.8, 4001, 5000), 0.8 / 128);
    assert.equal(squareP(0.8, 4999, 5000), 0.8 / 128);
    // Rescaled (square.py's default), 1,000 queries: iteration i counts as i·10 of 10,000.
    assert.equal(squareP(0.8, 1, 1000, true), 0.8);
    assert.equal(squareP(0.8, 2, 1000, true), 0.4);
    assert.equal(squareP(0.8, 999, 1000, true), 0.8 / 512);
  },
);

gpuTest("square: L2 window pattern = the original's meta pseudo-Gaussian", () => {
  // s = 3 by hand from the original code: top row [.25, 1.25, .25], bottom rows
  // −[[.25, .25, .25], [.25, 1.25, .25]], each half normalised, then the whole.
  const top = [0.25, 1.25, 0.25], bottom = [0.25, 0.25, 0.25, 0.25, 1.25, 0.25];
  const unit = (v: number[]) => v.map((a) => a / Math.hypot(...v));
  const whole = [...unit(top), ...unit(bottom).map((a) => -a)];
  assertClose(metaPseudoGaussian(3), unit(whole), "s = 3", { rtol: 1e-12, atol: 1e-12 });
  for (const s of [1, 2, 5, 8, 13]) {
    const g = metaPseudoGaussian(s);
    assertClose([Math.hypot(...g)], [1], `s = ${s}: unit norm`, { rtol: 1e-12, atol: 0 });
    const half = Math.floor(s / 2) * s;
    assert.ok(g.slice(0, half).every((v) => v > 0) && g.slice(half).every((v) => v < 0), `s = ${s}: signs`);
  }
});

gpuTest(
  "square L∞: in the ball, margin never rises, fooled samples frozen, fools a classifier",
  async () => {
    const { model, x, y } = await fixture();
    const threat: ThreatModel = { norm: "linf", eps: 0.05 };
    const init = square(model, x, y, threat, { queries: 1, seed: 3 }); // the stripes alone
    const xAdv = square(model, x, y, threat, { queries: 200, seed: 3 });
    await assertInBall(init, x, threat);
    await assertInBall(xAdv, x, threat);
    // Stripes: every pixel at x ± ε (or clipped), one sign per (channel, column); samples the
    // model misclassifies already (and the stripes do not) keep x itself.
    const [a, b] = [await init.toArray(), await x.toArray()];
    const mClean = await margins(model, x, y), mInit = await margins(model, init, y);
    const d = a.length / BATCH;
    let kept = 0;
    for (let n = 0; n < BATCH; n++) {
      if (a.slice(n * d, (n + 1) * d).every((v, i) => v === b[n * d + i])) {
        assert.ok(mClean[n] <= 0, `sample ${n} kept x but the model classifies x correctly`);
        kept++;
        continue;
      }
      // Misclassified x is replaced only by stripes that are misclassified too.
      if (mClean[n] <= 0) assert.ok(mInit[n] <= 0, `sample ${n} must keep x`);
      for (let i = n * d; i < (n + 1) * d; i++) {
        const up = Math.min(b[i] + 0.05, 1), down = Math.max(b[i] - 0.05, 0);
        assert.ok(Math.abs(a[i] - up) < 1e-6 || Math.abs(a[i] - down) < 1e-6, `init[${i}] is not x ± ε`);
        // Vertical stripes: the sign is the same as the pixel above (where neither is clipped).
        const sign = (k: number) => Math.sign(a[k] - b[k]);
        if (i - n * d >= 28 && sign(i) * sign(i - 28) !== 0) assert.equal(sign(i), sign(i - 28), "stripes");
      }
    }
    assert.ok(kept > 0, "no misclassified sample in the batch to check");
    const m0 = await margins(model, init, y), m1 = await margins(model, xAdv, y);
    const [i0, i1] = [await init.toArray(), await xAdv.toArray()];
    for (let n = 0; n < BATCH; n++) {
      assert.ok(m1[n] <= m0[n] + 1e-4, `sample ${n}: margin rose from ${m0[n]} to ${m1[n]}`);
      if (m0[n] <= 0) {
        assert.deepEqual(
          i1.slice(n * d, (n + 1) * d),
          i0.slice(n * d, (n + 1) * d),
          `fooled sample ${n} moved`,
        );
      }
    }
    const clean = await accuracyOf(model, x, y), adv = await accuracyOf(model, xAdv, y);
    const white = pgd(model, x, y, threat, { steps: 10, seed: 1 });
    const whiteAcc = await accuracyOf(model, white, y);
    console.log(`  L∞ 0.05: clean ${clean}, square(200 queries) ${adv}, pgd(10) ${whiteAcc}`);
    assert.ok(adv <= clean - 0.2, `square barely attacks: ${clean} -> ${adv}`);
    assert.ok(whiteAcc <= adv, `white-box PGD (${whiteAcc}) must beat or match Square (${adv})`);
    [init, xAdv, white].forEach((t) => t.dispose());
  },
);

gpuTest("square L2: in the ball, margin never rises, fools the classifier", async () => {
  const { model, x, y } = await fixture();
  const threat: ThreatModel = { norm: "l2", eps: 2 };
  const init = square(model, x, y, threat, { queries: 1, seed: 5 });
  const xAdv = square(model, x, y, threat, { queries: 200, seed: 5 });
  await assertInBall(init, x, threat);
  await assertInBall(xAdv, x, threat);
  const m0 = await margins(model, init, y), m1 = await margins(model, xAdv, y);
  for (let n = 0; n < BATCH; n++) assert.ok(m1[n] <= m0[n] + 1e-4, `sample ${n}: margin rose`);
  const clean = await accuracyOf(model, x, y), adv = await accuracyOf(model, xAdv, y);
  const white = pgd(model, x, y, threat, { steps: 10, seed: 1 });
  const whiteAcc = await accuracyOf(model, white, y);
  console.log(`  L2 2.0: clean ${clean}, square(200 queries) ${adv}, pgd(10) ${whiteAcc}`);
  assert.ok(adv <= clean - 0.2, `square barely attacks: ${clean} -> ${adv}`);
  assert.ok(whiteAcc <= adv, `white-box PGD (${whiteAcc}) must beat or match Square (${adv})`);
  [init, xAdv, white].forEach((t) => t.dispose());
});

gpuTest("square: reproducible by seed; EOT on a random model stays valid", async () => {
  const { model, x, y } = await fixture();
  const threat: ThreatModel = { norm: "linf", eps: 0.05 };
  const [a, b, c] = [1, 1, 2].map((seed) => square(model, x, y, threat, { queries: 20, seed }));
  assert.deepEqual(await a.toArray(), await b.toArray());
  assert.notDeepEqual(await a.toArray(), await c.toArray());
  const random = noisyModel(model, 0.1);
  for (const norm of ["linf", "l2"] as const) {
    const t: ThreatModel = { norm, eps: norm === "linf" ? 0.05 : 1 };
    const xAdv = square(random, x, y, t, { queries: 10, eot: 3, seed: 4 });
    await assertInBall(xAdv, x, t);
    xAdv.dispose();
  }
  [a, b, c].forEach((t) => t.dispose());
});

gpuTest("square: clear errors for bad arguments", async () => {
  const { model, x, y } = await fixture();
  const linf: ThreatModel = { norm: "linf", eps: 0.1 };
  assert.throws(() => square(model, x.alias([BATCH, 784]), y, linf), /expects x f32 \[N, C, H, W\]/);
  const yBad = fromArray(new Int32Array(3));
  assert.throws(() => square(model, x, yBad, linf), /labels i32 \[40\]/);
  yBad.dispose();
  assert.throws(() => square(model, x, y, linf, { queries: 0 }), /queries must be an integer >= 1/);
  assert.throws(() => square(model, x, y, linf, { pInit: 1.5 }), /pInit must be in \(0, 1\]/);
  assert.throws(() => square(model, x, y, { norm: "linf", eps: -1 }), /eps must be finite/);
});
