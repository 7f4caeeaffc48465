/**
 * FGSM and PGD end to end on a small classifier trained on real Fashion-MNIST (toy_models.ts):
 * the threat model's constraints hold, accuracy falls (PGD below FGSM, ~0 at ε = 1), keep-best
 * only ever adds misclassified samples, EOT averages away the noise of a random model, and
 * nothing leaks. Also prints the cost of one PGD step on a batch of 100.
 */
import assert from "node:assert/strict";
import { fgsm } from "../../src/attacks/fgsm.ts";
import { lossGradient, lossValue } from "../../src/attacks/gradient.ts";
import { defaultPgdStepSize, pgd } from "../../src/attacks/pgd.ts";
import { perSampleDistance } from "../../src/attacks/projection.ts";
import type { Model, ThreatModel } from "../../src/attacks/types.ts";
import { correctPredictions } from "../../src/ops/metrics.ts";
import { slice } from "../../src/ops/shape_ops.ts";
import { tidy } from "../../src/tensor/scope.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { gpuTest } from "../helpers/setup.ts";
import { noisyModel, trainedSmallClassifier } from "./toy_models.ts";

/** Per-sample correctness (0/1) of the model on x. */
async function correct(model: Model, x: Tensor, y: Tensor): Promise<number[]> {
  const c = tidy(() => correctPredictions(model(x), y));
  const out = Array.from(await c.toArray());
  c.dispose();
  return out;
}

const mean = (v: number[]) => v.reduce((s, a) => s + a, 0) / v.length;

/** The contract: ‖x_adv − x‖ ≤ ε (+1e-6) per sample, x_adv ∈ [0,1], no NaN. */
async function checkAdversarial(xAdv: Tensor, x: Tensor, threat: ThreatModel, what: string): Promise<void> {
  assert.deepEqual(xAdv.shape, x.shape, `${what}: shape`);
  for (const v of await xAdv.toArray()) {
    assert.ok(v >= 0 && v <= 1, `${what}: pixel ${v} outside [0,1] (or NaN)`);
  }
  const d = tidy(() => perSampleDistance(xAdv, x, threat.norm));
  for (const v of await d.toArray()) {
    assert.ok(v <= threat.eps + 1e-6, `${what}: ‖δ‖_${threat.norm} = ${v} > eps ${threat.eps}`);
  }
  d.dispose();
}

/** The first k samples of a batch. */
function head(t: Tensor, k: number): Tensor {
  return slice(t, [0, ...t.shape.slice(1).map(() => 0)], [k, ...t.shape.slice(1)]);
}

gpuTest(
  "L∞: FGSM and PGD keep the constraints and reduce accuracy, PGD ≤ FGSM; ε = 1 breaks all",
  async () => {
    const { model, x, y } = await trainedSmallClassifier();
    const clean = mean(await correct(model, x, y));
    assert.ok(clean >= 0.6, `the toy classifier is too weak: clean accuracy ${clean}`);
    const threat: ThreatModel = { norm: "linf", eps: 0.05 };
    const xf = fgsm(model, x, y, threat);
    await checkAdversarial(xf, x, threat, "fgsm linf");
    const steps = 10;
    const started = performance.now();
    const xp = pgd(model, x, y, threat, { steps, seed: 1 });
    await checkAdversarial(xp, x, threat, "pgd linf");
    const msPerStep = (performance.now() - started) / steps;
    const [accF, accP] = [mean(await correct(model, xf, y)), mean(await correct(model, xp, y))];
    console.log(
      `clean ${clean}, FGSM ${accF}, PGD-${steps} ${accP} (eps ${threat.eps}); ` +
        `PGD ${msPerStep.toFixed(0)} ms/step on ${x.shape[0]} images (incl. checks' readback)`,
    );
    assert.ok(accF < clean - 0.1, `FGSM did not reduce accuracy: ${clean} -> ${accF}`);
    assert.ok(accP <= accF, `PGD (${accP}) is weaker than FGSM (${accF})`);
    assert.ok(accP < clean / 2, `PGD barely reduced accuracy: ${clean} -> ${accP}`);

    const all = { norm: "linf", eps: 1 } as const;
    const xAll = pgd(model, x, y, all, { steps: 5, seed: 2 });
    await checkAdversarial(xAll, x, all, "pgd linf eps 1");
    const accAll = mean(await correct(model, xAll, y));
    assert.ok(accAll <= 0.02, `PGD at eps = 1 leaves accuracy ${accAll}`);
    for (const t of [xf, xp, xAll]) t.dispose();
  },
);

gpuTest("L2: FGSM and PGD (CE and margin loss) keep the constraints and reduce accuracy", async () => {
  const { model, x, y } = await trainedSmallClassifier();
  const clean = mean(await correct(model, x, y));
  const threat: ThreatModel = { norm: "l2", eps: 1 };
  const xf = fgsm(model, x, y, threat);
  const xp = pgd(model, x, y, threat, { steps: 8, seed: 3 });
  const xm = pgd(model, x, y, threat, { steps: 8, seed: 3, loss: "margin" });
  const acc: number[] = [];
  for (const [t, what] of [[xf, "fgsm l2"], [xp, "pgd l2"], [xm, "pgd l2 margin"]] as const) {
    await checkAdversarial(t, x, threat, what);
    acc.push(mean(await correct(model, t, y)));
  }
  console.log(`L2 eps 1: clean ${clean}, FGSM ${acc[0]}, PGD-8 ${acc[1]}, PGD-8 margin ${acc[2]}`);
  assert.ok(acc[0] < clean - 0.1, `L2 FGSM did not reduce accuracy: ${clean} -> ${acc[0]}`);
  assert.ok(acc[1] <= acc[0] && acc[2] <= acc[0], `L2 PGD is weaker than FGSM: ${acc}`);
  for (const t of [xf, xp, xm]) t.dispose();
});

gpuTest(
  "keep-best: more steps or restarts only add misclassified samples and never lower the loss",
  async () => {
    const { model, x: xAll, y: yAll } = await trainedSmallClassifier();
    const x = head(xAll, 40), y = head(yAll, 40);
    for (const threat of [{ norm: "linf", eps: 0.02 }, { norm: "l2", eps: 0.4 }] as const) {
      // Same start and step size: the longer run's iterates include the shorter run's.
      const options = { stepSize: threat.eps / 4, seed: 9 };
      const short = pgd(model, x, y, threat, { ...options, steps: 3 });
      const long = pgd(model, x, y, threat, { ...options, steps: 6 });
      const twice = pgd(model, x, y, threat, { ...options, steps: 3, restarts: 2 });
      const [cs, cl, ct] = [
        await correct(model, short, y),
        await correct(model, long, y),
        await correct(model, twice, y),
      ];
      const [ls, ll, lt] = await Promise.all(
        [short, long, twice].map((t) => tidy(() => lossValue(model, t, y).loss).toArray()),
      );
      for (let n = 0; n < cs.length; n++) {
        assert.ok(
          cl[n] <= cs[n] && ct[n] <= cs[n],
          `${threat.norm}: sample ${n} misclassified by the short run only`,
        );
        if (cl[n] && cs[n]) assert.ok(ll[n] >= ls[n], `${threat.norm}: sample ${n} loss ${ll[n]} < ${ls[n]}`);
        if (ct[n] && cs[n]) {
          assert.ok(
            lt[n] >= ls[n],
            `${threat.norm}: sample ${n} restart loss ${lt[n]} < ${ls[n]}`,
          );
        }
      }
      assert.ok(
        mean(cs) > 0,
        `${threat.norm}: the short run already broke everything; the test needs a smaller eps`,
      );
      // Reproducible with a seed.
      const again = pgd(model, x, y, threat, { ...options, steps: 3 });
      assert.deepEqual(await again.toArray(), await short.toArray());
      for (const t of [short, long, twice, again]) t.dispose();
    }
    x.dispose();
    y.dispose();
  },
);

gpuTest("default step: ε/4 from 10 steps on (2/255 at 8/255), 2.5·ε/steps below", async () => {
  assert.equal(defaultPgdStepSize(8 / 255, 10), 2 / 255);
  assert.equal(defaultPgdStepSize(8 / 255, 20), 2 / 255);
  assert.equal(defaultPgdStepSize(8 / 255, 200), 2 / 255);
  assert.equal(defaultPgdStepSize(0.3, 3), 0.25);
  assert.equal(defaultPgdStepSize(0.5, 0), 1.25);
  // pgd takes that default: the same iterates as the explicit step, not those of another step.
  const { model, x: xAll, y: yAll } = await trainedSmallClassifier();
  const x = head(xAll, 16), y = head(yAll, 16);
  const threat: ThreatModel = { norm: "linf", eps: 0.03 };
  for (const steps of [3, 12]) {
    const run = (stepSize?: number) => pgd(model, x, y, threat, { steps, seed: 5, stepSize });
    const [byDefault, explicit, other] = [
      run(),
      run(defaultPgdStepSize(threat.eps, steps)),
      run(steps < 10 ? threat.eps / 4 : 2.5 * threat.eps / steps),
    ];
    const [d, e, o] = await Promise.all([byDefault, explicit, other].map((t) => t.toArray()));
    assert.deepEqual(d, e, `PGD-${steps}: the default step is not defaultPgdStepSize`);
    assert.notDeepEqual(d, o, `PGD-${steps}: another step size gave the same iterates (test too weak)`);
    for (const t of [byDefault, explicit, other]) t.dispose();
  }
  x.dispose();
  y.dispose();
});

gpuTest("EOT: the gradient's variance over repeated calls falls ~1/E on a noisy model", async () => {
  const { model, x: xAll, y: yAll } = await trainedSmallClassifier();
  const x = head(xAll, 10), y = head(yAll, 10);
  const noisy = noisyModel(model, 0.1);
  const repeats = 6;
  /** Mean over elements of the variance over `repeats` calls of the EOT gradient. */
  const variance = async (eot: number) => {
    const grads: Float32Array[] = [];
    for (let r = 0; r < repeats; r++) {
      const g = tidy(() => lossGradient(noisy, x, y, undefined, { eot }).grad);
      grads.push((await g.toArray()) as Float32Array);
      g.dispose();
    }
    let total = 0;
    for (let i = 0; i < grads[0].length; i++) {
      const m = grads.reduce((s, g) => s + g[i], 0) / repeats;
      total += grads.reduce((s, g) => s + (g[i] - m) ** 2, 0) / (repeats - 1);
    }
    return total / grads[0].length;
  };
  const [v1, v8] = [await variance(1), await variance(8)];
  console.log(
    `EOT gradient variance: E=1 ${v1.toExponential(3)}, E=8 ${v8.toExponential(3)}, ratio ${
      (v1 / v8).toFixed(1)
    }`,
  );
  assert.ok(v1 > 0, "the noisy model gave identical gradients: is its noise fresh per call?");
  assert.ok(v1 / v8 > 3, `variance ratio E=1/E=8 is ${v1 / v8}, expected ~8`);

  // EOT attacks on the random model keep the constraints.
  const threat = { norm: "linf", eps: 0.05 } as const;
  for (const options of [{ eot: 2 }, { eot: 2, averageLogits: true }, { eot: 2, surrogate: model }]) {
    const xa = pgd(noisy, x, y, threat, { steps: 2, seed: 4, ...options });
    await checkAdversarial(xa, x, threat, `pgd ${JSON.stringify(Object.keys(options))}`);
    xa.dispose();
  }
  const xf = fgsm(noisy, x, y, threat, { eot: 3 });
  await checkAdversarial(xf, x, threat, "fgsm eot");
  for (const t of [xf, x, y]) t.dispose();
});

gpuTest("FGSM and PGD leak no GPU memory and validate their options", async (gpu) => {
  const { model, x: xAll, y: yAll } = await trainedSmallClassifier();
  const x = head(xAll, 8), y = head(yAll, 8);
  const threat = { norm: "l2", eps: 0.5 } as const;
  const run = () => {
    pgd(model, x, y, threat, { steps: 2, restarts: 2, eot: 2 }).dispose();
    fgsm(model, x, y, threat).dispose();
  };
  run();
  await x.toArray();
  const before = gpu.memory().bytesInUse;
  run();
  run();
  await x.toArray();
  assert.equal(gpu.memory().bytesInUse, before, "memory grew across attack calls");
  assert.throws(() => pgd(model, x, y, threat, { steps: 1.5 }), /pgd: steps must be an integer >= 0/);
  assert.throws(() => pgd(model, x, y, threat, { restarts: 0 }), /pgd: restarts must be an integer >= 1/);
  assert.throws(() => pgd(model, x, y, threat, { stepSize: -1 }), /pgd: stepSize must be finite and >= 0/);
  // Zero steps: the random start itself, still inside the ball.
  const start = pgd(model, x, y, threat, { steps: 0, seed: 1 });
  await checkAdversarial(start, x, threat, "pgd 0 steps");
  for (const t of [start, x, y]) t.dispose();
});
