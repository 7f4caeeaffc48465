import assert from "node:assert/strict";
import {
  apgd,
  apgdCheckpoints,
  ApgdStepSize,
  apgdT,
  momentumStep,
  trackBest,
} from "../../src/attacks/apgd.ts";
import { autoAttack } from "../../src/attacks/autoattack.ts";
import { correctPredictions } from "../../src/ops/metrics.ts";
import { pgd } from "../../src/attacks/pgd.ts";
import { selectPerSample } from "../../src/attacks/projection.ts";
import type { Model, Norm, ThreatModel } from "../../src/attacks/types.ts";
import { fromArray } from "../../src/ops/creation.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";
import { correctCountOf, linearModel, noisyModel, trainedSmallClassifier } from "./toy_models.ts";

// ---- the checkpoint schedule ----

gpuTest("apgdCheckpoints: AutoAttack's windows (22, shrinking by 3, at least 6 for 100 steps)", () => {
  assert.deepEqual(apgdCheckpoints(100), [22, 41, 57, 70, 80, 87, 93, 99]);
  // 30 steps: windows 6, 5, 4, 3, 2, 1, 1, ... (shrink max(floor(0.9), 1) = 1, minimum 1).
  assert.deepEqual(apgdCheckpoints(30), [6, 11, 15, 18, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]);
  // 1,000 steps: windows 220, 190, ... down to 60.
  const c = apgdCheckpoints(1000);
  assert.deepEqual(c.slice(0, 3), [220, 410, 570]);
  assert.equal(c[c.length - 1] - c[c.length - 2], 60);
  assert.deepEqual(apgdCheckpoints(1), [1]);
});

// ---- the per-sample step-size schedule vs a literal host translation of AutoAttack ----

/**
 * AutoAttack's bookkeeping (apgd attack_single_run, check_oscillation) on a scripted sequence of
 * losses: at each checkpoint, the step sizes, the halving flags and the index of the iterate
 * each sample continues from (its best iterate where halved; -1 = the start point).
 */
function referenceSchedule(loss0: number[], losses: number[][], eta0: number, rho: number) {
  const steps = losses.length, n = loss0.length;
  let k = Math.max(Math.floor(0.22 * steps), 1);
  const shrink = Math.max(Math.floor(0.03 * steps), 1), minK = Math.max(Math.floor(0.06 * steps), 1);
  const lossSteps = losses.map(() => new Array(n).fill(0));
  const lossBest = [...loss0], eta = new Array(n).fill(eta0);
  let lossBestLastCheck = [...lossBest], reducedLastCheck = new Array(n).fill(1);
  const bestIndex = new Array(n).fill(-1);
  const checks: { eta: number[]; halved: number[]; from: number[]; lossBest: number[] }[] = [];
  let counter3 = 0;
  for (let i = 0; i < steps; i++) {
    lossSteps[i] = losses[i];
    for (let s = 0; s < n; s++) {
      if (losses[i][s] > lossBest[s]) {
        lossBest[s] = losses[i][s];
        bestIndex[s] = i;
      }
    }
    if (++counter3 === k) {
      // Python's loss_steps[-1] wraps to the last (still zero) row.
      const at = (j: number) => lossSteps[j < 0 ? steps + j : j];
      const halved = lossBest.map((_, s) => {
        let t = 0;
        for (let c = 0; c < k; c++) t += at(i - c)[s] > at(i - c - 1)[s] ? 1 : 0;
        const oscillation = t <= k * rho;
        const noImprovement = reducedLastCheck[s] === 0 && lossBestLastCheck[s] >= lossBest[s];
        return oscillation || noImprovement ? 1 : 0;
      });
      reducedLastCheck = halved;
      lossBestLastCheck = [...lossBest];
      halved.forEach((h, s) => eta[s] /= h ? 2 : 1);
      checks.push({
        eta: [...eta],
        halved,
        from: halved.map((h, s) => h ? bestIndex[s] : i),
        lossBest: [...lossBest],
      });
      k = Math.max(k - shrink, minK);
      counter3 = 0;
    }
  }
  return checks;
}

/** Scripted per-sample loss sequences: rising, flat, oscillating, stalling, falling, random. */
function scriptedLosses(steps: number, rng: Rng): { loss0: number[]; losses: number[][] } {
  const patterns: ((i: number) => number)[] = [
    (i) => i + 1,
    () => 1,
    (i) => i % 2,
    (i) => Math.min(i, 5),
    (i) => -i,
    () => rng.uniform(-1, 1),
    (i) => Math.sin(i * 0.7) + i * 0.05,
    (i) => (i % 4 === 0 ? -1 : i),
  ];
  let walk = 0;
  const losses = Array.from({ length: steps }, (_, i) => {
    walk += rng.next() < 0.8 ? rng.next() : -rng.next();
    return [...patterns.map((f) => Math.fround(f(i))), Math.fround(walk)];
  });
  return {
    loss0: Array.from({ length: patterns.length + 1 }, () => Math.fround(rng.uniform(-0.5, 0.5))),
    losses,
  };
}

for (const steps of [30, 100]) {
  gpuTest(
    `ApgdStepSize: halving and restarts match AutoAttack on scripted losses (${steps} steps)`,
    async () => {
      const rng = new Rng(steps);
      const { loss0, losses } = scriptedLosses(steps, rng);
      const n = loss0.length, d = 3, eta0 = 0.0625, rho = 0.75;
      const expected = referenceSchedule(loss0, losses, eta0, rho);
      const checkpoints = apgdCheckpoints(steps);
      assert.equal(expected.length, checkpoints.length);

      // Iterate i is x = i everywhere (gradient -i), so restarts show which iterate was restored.
      const iterate = (i: number, sign = 1) => fromArray(new Float32Array(n * d).fill(sign * i), [n, d]);
      const schedule = new ApgdStepSize(fromArray(Float32Array.from(loss0)), eta0);
      const xBest = iterate(-1), gradBest = iterate(-1, -1);
      let check = 0, previous = 0;
      for (let i = 0; i < steps; i++) {
        const x = iterate(i), g = iterate(i, -1), loss = fromArray(Float32Array.from(losses[i]));
        trackBest(schedule, x, g, loss, xBest, gradBest);
        schedule.observe(loss);
        if (checkpoints[check] === i + 1) {
          schedule.check(i + 1 - previous, rho);
          previous = i + 1;
          const restarted = selectPerSample(schedule.halved, xBest, x);
          const restartedGrad = selectPerSample(schedule.halved, gradBest, g);
          const want = expected[check];
          const what = `check ${check} (after iteration ${i + 1})`;
          assert.deepEqual(Array.from(await schedule.halved.toArray()), want.halved, `${what}: halved`);
          assert.deepEqual(Array.from(await schedule.eta.toArray()), want.eta, `${what}: eta`);
          assert.deepEqual(
            Array.from(await schedule.lossBest.toArray()),
            want.lossBest,
            `${what}: best loss`,
          );
          const from = Array.from(await restarted.toArray()).filter((_, j) => j % d === 0);
          assert.deepEqual(from, want.from, `${what}: iterate each sample continues from`);
          const fromGrad = Array.from(await restartedGrad.toArray()).filter((_, j) => j % d === 0);
          assert.deepEqual(fromGrad, want.from.map((v) => -v), `${what}: gradient it continues with`);
          restarted.dispose();
          restartedGrad.dispose();
          check++;
        }
        [x, g, loss].forEach((t) => t.dispose());
      }
      assert.equal(check, expected.length);
      // The scripted patterns exercise both rules and both outcomes.
      const halvedAtFirst = expected[0].halved;
      assert.equal(halvedAtFirst[0], 0, "a rising loss keeps its step size");
      assert.equal(halvedAtFirst[1], 1, "a flat loss halves it");
      schedule.dispose();
      xBest.dispose();
      gradBest.dispose();
    },
  );
}

// ---- the update ----

/** Host APGD update of one sample (float64): z = P(x + eta·dir), x' = P(x + a(z − x) + (1 − a)(x − xp)). */
function momentumStepRef(
  x: number[],
  xp: number[],
  g: number[],
  eta: number,
  x0: number[],
  norm: Norm,
  eps: number,
  a: number,
) {
  const norm2 = (v: number[]) => Math.sqrt(v.reduce((s, e) => s + e * e, 0));
  const project = (v: number[]) => {
    if (norm === "linf") {
      return v.map((e, j) => Math.min(Math.max(e, Math.max(x0[j] - eps, 0)), Math.min(x0[j] + eps, 1)));
    }
    const delta = v.map((e, j) => e - x0[j]);
    const scale = Math.min(1, eps / norm2(delta));
    return delta.map((e, j) => Math.min(Math.max(x0[j] + e * scale, 0), 1));
  };
  const gn = norm2(g) + 1e-12;
  const z = project(x.map((e, j) => e + eta * (norm === "linf" ? Math.sign(g[j]) : g[j] / gn)));
  return project(x.map((e, j) => e + a * (z[j] - e) + (1 - a) * (e - xp[j])));
}

gpuTest("momentumStep: APGD's update vs a float64 reference (linf, l2; a = 1 and 0.75)", async () => {
  const rng = new Rng(4);
  const n = 5, d = 12;
  const arr = (f: () => number) => Array.from({ length: n * d }, f);
  for (const norm of ["linf", "l2"] as Norm[]) {
    const eps = norm === "linf" ? 0.1 : 0.4;
    const x0 = arr(() => rng.uniform(-0.2, 1.2)).map((v) => Math.fround(Math.min(Math.max(v, 0), 1)));
    // Iterates near x0 (inside the ball, in [0,1]); gradients with some exact zeros.
    const near = () =>
      x0.map((v) =>
        Math.fround(Math.min(Math.max(v + rng.uniform(-eps, eps) / (norm === "l2" ? 4 : 1), 0), 1))
      );
    const x = near(), xp = near();
    const g = arr(() => (rng.next() < 0.1 ? 0 : Math.fround(rng.uniform())));
    const eta = Array.from({ length: n }, (_, s) => Math.fround(eps * [2, 1, 0.5, 0.25, 0.03][s]));
    for (const a of [1, 0.75]) {
      const t = (v: number[], shape = [n, d]) => fromArray(Float32Array.from(v), shape);
      const [xt, xpt, gt, x0t, etat] = [t(x), t(xp), t(g), t(x0), t(eta, [n])];
      const out = Array.from(await momentumStep(xt, xpt, gt, etat, x0t, { norm, eps }, a).toArray());
      const want: number[] = [];
      for (let s = 0; s < n; s++) {
        const part = (v: number[]) => v.slice(s * d, (s + 1) * d);
        want.push(...momentumStepRef(part(x), part(xp), part(g), eta[s], part(x0), norm, eps, a));
      }
      assertClose(out, want, `${norm} a = ${a}`, { rtol: 1e-5, atol: 2e-6 });
      [xt, xpt, gt, x0t, etat].forEach((v) => v.dispose());
    }
  }
});

// ---- invariants on a small deterministic and a random model ----

function linearToy(rng: Rng, d: number, k: number): Model {
  const w = Float32Array.from({ length: d * k }, () => rng.uniform(-1, 1));
  const b = Float32Array.from({ length: k }, () => rng.uniform(-0.5, 0.5));
  return linearModel(w, b, d, k);
}

/** Images in [0,1] with some pixels exactly at the box edges. */
function images(rng: Rng, n: number, shape: number[]): Tensor {
  const size = n * shape.reduce((a, b) => a * b, 1);
  return fromArray(
    Float32Array.from({ length: size }, () => {
      const u = rng.next();
      return u < 0.15 ? 0 : u > 0.85 ? 1 : rng.next();
    }),
    [n, ...shape],
  );
}

/** Asserts ‖x_adv − x‖ ≤ eps per sample, x_adv ∈ [0,1] and no NaN. */
async function assertInThreat(xAdv: Tensor, x: Tensor, threat: ThreatModel, what: string): Promise<number[]> {
  const a = await xAdv.toArray(), b = await x.toArray();
  const n = x.shape[0], d = x.size / n;
  const norms: number[] = [];
  for (let s = 0; s < n; s++) {
    let norm = 0;
    for (let j = s * d; j < (s + 1) * d; j++) {
      assert.ok(Number.isFinite(a[j]), `${what}: element ${j} is ${a[j]}`);
      assert.ok(a[j] >= 0 && a[j] <= 1, `${what}: element ${j} = ${a[j]} outside [0,1]`);
      const delta = Math.abs(a[j] - b[j]);
      norm = threat.norm === "linf" ? Math.max(norm, delta) : norm + delta * delta;
    }
    if (threat.norm === "l2") norm = Math.sqrt(norm);
    assert.ok(
      norm <= threat.eps * (1 + 1e-5) + 1e-6,
      `${what}: sample ${s} has ‖δ‖ = ${norm} > eps ${threat.eps}`,
    );
    norms.push(norm);
  }
  return norms;
}

gpuTest(
  "apgd: ‖δ‖ ≤ eps, x_adv ∈ [0,1], no NaN (linf/l2, CE/DLR/targeted, restarts, EOT, random model)",
  async () => {
    const rng = new Rng(21);
    const n = 7, shape = [1, 5, 6], d = 30, k = 5;
    const model = linearToy(rng, d, k);
    const random = noisyModel(model, 0.05);
    const x = images(rng, n, shape);
    const y = fromArray(Int32Array.from({ length: n }, () => rng.int(0, k - 1)), [n], "i32");
    const targets = fromArray(Int32Array.from({ length: n }, (_, s) => s % k), [n], "i32");
    const cases: [Norm, number, Parameters<typeof apgd>[4]][] = [
      ["linf", 0.03, { loss: "ce", steps: 12, seed: 1 }],
      ["linf", 0.1, { loss: "dlr", steps: 12, restarts: 2, seed: 2 }],
      ["linf", 0.05, { loss: "dlr-targeted", targets, steps: 8, seed: 3 }],
      ["l2", 0.5, { loss: "ce", steps: 12, restarts: 2, seed: 4 }],
      ["l2", 2, { loss: "dlr", steps: 10, seed: 5 }],
      ["linf", 0, { loss: "ce", steps: 3, seed: 6 }],
    ];
    for (const [norm, eps, options] of cases) {
      const threat = { norm, eps };
      const what = `${norm} eps ${eps} ${options!.loss}`;
      const xAdv = apgd(model, x, y, threat, options);
      await assertInThreat(xAdv, x, threat, what);
      xAdv.dispose();
      const xEot = apgd(random, x, y, threat, { ...options, eot: 2, steps: 4 });
      await assertInThreat(xEot, x, threat, what + " (random model, EOT 2)");
      xEot.dispose();
    }
    const averaged = apgd(random, x, y, { norm: "linf", eps: 0.05 }, {
      steps: 4,
      eot: 3,
      averageLogits: true,
      loss: "dlr",
      seed: 9,
    });
    await assertInThreat(averaged, x, { norm: "linf", eps: 0.05 }, "averageLogits");
    averaged.dispose();
    [x, y, targets].forEach((t) => t.dispose());
  },
);

gpuTest("apgd: deterministic for a seed, no GPU memory kept, clear errors", async (gpu) => {
  const rng = new Rng(8);
  const model = linearToy(rng, 12, 4);
  const x = images(rng, 5, [3, 2, 2]);
  const y = fromArray(Int32Array.from([0, 1, 2, 3, 0]), [5], "i32");
  const threat: ThreatModel = { norm: "linf", eps: 0.05 };
  const first = apgd(model, x, y, threat, { steps: 10, seed: 3, loss: "dlr" });
  const firstData = await first.toArray();
  first.dispose();
  const before = gpu.memory().bytesInUse;
  const second = apgd(model, x, y, threat, { steps: 10, seed: 3, loss: "dlr" });
  assert.deepEqual(await second.toArray(), firstData, "same seed, same result");
  second.dispose();
  const t2 = apgdT(model, x, y, threat, { steps: 4, targets: 2, seed: 3 });
  t2.dispose();
  assert.equal(gpu.memory().bytesInUse, before, "APGD frees everything but its result");

  assert.throws(
    () => apgd(model, x, y, threat, { loss: "dlr-targeted" }),
    /apgd: loss "dlr-targeted" needs options\.targets/,
  );
  assert.throws(
    () => apgd(model, x, y, threat, { loss: "cw" as never }),
    /loss must be "ce", "dlr" or "dlr-targeted"/,
  );
  assert.throws(() => apgd(model, x, y, threat, { steps: 0 }), /steps must be an integer >= 1/);
  assert.throws(
    () => apgd(model, x, y, { norm: "l1" as Norm, eps: 1 }),
    /threat.norm must be "linf" or "l2"/,
  );
  assert.throws(() => apgd(model, x, fromArray(new Float32Array(5)), threat), /y must be i32 \[5\]/);
  assert.throws(() => apgdT(model, x, y, threat, { targets: 4 }), /targets must be an integer in \[1, 3\]/);
  const three = linearToy(rng, 12, 3);
  assert.throws(() => apgdT(three, x, y, threat), /apgdT: needs logits \[N, K\] with K >= 4/);
  assert.throws(
    () => apgd(linearToy(rng, 12, 2), x, y, threat, { loss: "dlr", steps: 1 }),
    /dlrLoss: needs at least 3 classes/,
  );
  [x, y].forEach((t) => t.dispose());
});

// ---- strength on a trained classifier ----

gpuTest(
  "apgd on a trained small-cnn: APGD-CE, APGD-DLR and APGD-T beat 5-step PGD; eps = 1 fools all",
  async () => {
    const { model, x, y } = await trainedSmallClassifier();
    const n = x.shape[0];
    const clean = await correctCountOf(model, x, y);
    const threat: ThreatModel = { norm: "linf", eps: 0.03 };
    const run = async (attack: (t: ThreatModel) => Tensor, t = threat) => {
      const xAdv = attack(t);
      await assertInThreat(xAdv, x, t, "trained");
      const acc = await correctCountOf(model, xAdv, y);
      xAdv.dispose();
      return acc;
    };
    const pgd5 = await run((t) => pgd(model, x, y, t, { steps: 5, seed: 1 }));
    const ce = await run((t) => apgd(model, x, y, t, { steps: 15, seed: 1 }));
    const dlr = await run((t) => apgd(model, x, y, t, { loss: "dlr", steps: 15, seed: 1 }));
    const targeted = await run((t) => apgdT(model, x, y, t, { steps: 8, targets: 2, seed: 1 }));
    console.log(
      `  accuracy of ${n}: clean ${clean}, PGD-5 ${pgd5}, APGD-CE ${ce}, APGD-DLR ${dlr}, APGD-T(2) ${targeted}`,
    );
    assert.ok(pgd5 < clean - 10, `the attack setting is meaningful (PGD-5 ${pgd5} vs clean ${clean})`);
    assert.ok(ce <= pgd5, `APGD-CE ${ce} <= PGD-5 ${pgd5}`);
    // DLR is a different loss than PGD's CE: allow one sample of slack.
    assert.ok(dlr <= pgd5 + 1, `APGD-DLR ${dlr} <= PGD-5 ${pgd5} (+1)`);
    assert.ok(targeted <= pgd5 + 1, `APGD-T ${targeted} <= PGD-5 ${pgd5} (+1)`);

    const all = await run((t) => apgd(model, x, y, t, { steps: 3, seed: 2 }), { norm: "linf", eps: 1 });
    assert.ok(all <= 1, `eps = 1 leaves ${all} of ${n} correct`);
    const l2 = await run((t) => apgd(model, x, y, t, { loss: "dlr", steps: 8, seed: 3 }), {
      norm: "l2",
      eps: 1,
    });
    assert.ok(l2 < clean - 10, `APGD-DLR l2 eps 1: ${l2} vs clean ${clean}`);
  },
);

// ---- AutoAttack ensembles ----

gpuTest(
  "autoAttack standard and rand: worst case per point, attacks on the still-robust points",
  async () => {
    const { model, x, y } = await trainedSmallClassifier();
    const threat: ThreatModel = { norm: "linf", eps: 0.03 };
    const lines: string[] = [];
    const result = await autoAttack(model, x, y, threat, {
      steps: 5,
      targets: 2,
      squareQueries: 30,
      seed: 4,
      log: (line) => lines.push(line),
    });
    assert.deepEqual(result.perAttack.map((a) => a.name), ["clean", "apgd-ce", "apgd-t", "square"]);
    const counts = result.perAttack.map((a) => a.robustAfter);
    counts.slice(1).forEach((c, j) => assert.ok(c <= counts[j], `robust counts never rise: ${counts}`));
    assert.equal(result.robust.reduce((s, r) => s + r, 0), counts[counts.length - 1]);
    assert.equal(lines.length, 4, lines.join("\n"));
    await assertInThreat(result.xAdv, x, threat, "autoAttack");
    // The flags are what the model says about the returned points (a deterministic model).
    const correct = correctPredictions(model(result.xAdv), y);
    assert.deepEqual(Array.from(await correct.toArray(), (c) => c > 0 ? 1 : 0), Array.from(result.robust));
    console.log(`  standard: ${result.perAttack.map((a) => `${a.name} ${a.robustAfter}`).join(", ")}`);
    correct.dispose();
    result.xAdv.dispose();

    const random = noisyModel(model, 0.05);
    const rand = await autoAttack(random, x, y, threat, { version: "rand", steps: 3, eot: 2, seed: 5 });
    assert.deepEqual(rand.perAttack.map((a) => a.name), ["clean", "apgd-ce", "apgd-dlr"]);
    const randCounts = rand.perAttack.map((a) => a.robustAfter);
    randCounts.slice(1).forEach((c, j) =>
      assert.ok(c <= randCounts[j], `robust counts never rise: ${randCounts}`)
    );
    assert.ok(randCounts[2] < randCounts[0] - 10, `rand version attacks: ${randCounts}`);
    await assertInThreat(rand.xAdv, x, threat, "autoAttack rand");
    console.log(`  rand: ${rand.perAttack.map((a) => `${a.name} ${a.robustAfter}`).join(", ")}`);
    rand.xAdv.dispose();
    await assert.rejects(
      () => autoAttack(model, x, y, threat, { version: "fast" as never }),
      /version must be "standard" or "rand"/,
    );
  },
);
