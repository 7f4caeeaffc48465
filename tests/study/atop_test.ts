/**
 * The atop stage: the classifier stays frozen (bit-identical weights and batchnorm statistics),
 * the generator learns, and a killed-then-resumed stage equals the uninterrupted one.
 */
import assert from "node:assert/strict";
import type { Module } from "../../src/nn/module.ts";
import { buildProfile } from "../../src/study/config.ts";
import { type AtopConfig, type AtopMode, fineTunePurifier } from "../../src/train/atop.ts";
import { buildClassifier } from "../../src/train/classifier.ts";
import { buildPurifier } from "../../src/train/pretrain.ts";
import { RunFolder } from "../../src/train/run_folder.ts";
import { PurifiedClassifier, toUnit } from "../../src/purify/pipeline.ts";
import { RandomTransform } from "../../src/purify/transforms.ts";
import { rand } from "../../src/ops/random.ts";
import { gpuTest } from "../helpers/setup.ts";

const quiet = { log: () => {}, tty: false };
const tiny = buildProfile("tiny");

function atopConfig(mode: AtopMode, overrides: Partial<AtopConfig> = {}): AtopConfig {
  return {
    ...tiny.atop,
    mode,
    limit: 48,
    batchSize: 16,
    epochs: 2,
    ceStartEpoch: 1,
    evalPoints: 20,
    evalBatchSize: 20,
    logEvery: 1,
    checkpointEvery: 2,
    attack: { ...tiny.atop.attack, steps: 2, eot: 2 },
    ...overrides,
  };
}

async function snapshot(model: Module): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, t] of Object.entries(model.stateDict())) out[k] = Array.from(await t.toArray());
  return out;
}

/** A classifier with batchnorm (ResNet-8, untrained but deterministic) and a tiny purifier. */
function models() {
  const classifier = buildClassifier({ ...tiny.classifier, model: "resnet8" }, [1, 28, 28], 10);
  const generator = buildPurifier(tiny.pretrain, 1);
  return { classifier, generator };
}

for (const mode of ["fgsm-transfer", "adaptive", "clean"] as const) {
  gpuTest(
    `atop ${mode}: the classifier's weights and statistics are bit-identical after; the generator moved`,
    async () => {
      const { classifier, generator } = models();
      const before = await snapshot(classifier), generatorBefore = await snapshot(generator);
      const result = await fineTunePurifier(
        atopConfig(mode, { epochs: 1 }),
        generator,
        classifier,
        new RunFolder(await Deno.makeTempDir()),
        quiet,
      );
      assert.equal(result.completed, true);
      assert.equal(result.step, 3);
      assert.deepEqual(await snapshot(classifier), before, "frozen classifier unchanged, bit for bit");
      assert.ok(classifier.parameters().every((p) => p.requiresGrad), "trainable again after the stage");
      assert.equal(classifier.training, true, "back in training mode, as it came in");
      assert.ok(classifier.parameters().every((p) => !p.grad), "no gradient accumulated in the classifier");
      const after = await snapshot(generator);
      const moved = Object.keys(after).filter((k) => after[k].some((v, i) => v !== generatorBefore[k][i]));
      assert.ok(moved.length === Object.keys(after).length, `every generator tensor moved (${moved.length})`);
      for (const point of result.curve) assert.ok(point.every(Number.isFinite), "finite losses");
      classifier.dispose();
      generator.dispose();
    },
  );
}

gpuTest("atop adaptive (PGD-2, EOT 2): a killed and resumed stage equals the uninterrupted one", async () => {
  const config = atopConfig("adaptive");
  const a = models();
  const full = await fineTunePurifier(
    config,
    a.generator,
    a.classifier,
    new RunFolder(await Deno.makeTempDir()),
    quiet,
  );
  assert.equal(full.step, 6);

  const b = models();
  const dir = new RunFolder(await Deno.makeTempDir());
  const killed = await fineTunePurifier(
    { ...config, stopAfterSteps: 3 },
    b.generator,
    b.classifier,
    dir,
    quiet,
  );
  assert.equal(killed.completed, false);
  // A new process: fresh models (the pre-trained weights), the stage restores its checkpoint.
  b.generator.dispose();
  b.classifier.dispose();
  const c = models();
  const resumed = await fineTunePurifier(config, c.generator, c.classifier, dir, { ...quiet, resume: true });
  assert.equal(resumed.completed, true);
  assert.deepEqual(resumed.curve, full.curve, "the same losses at every step");
  assert.deepEqual(resumed.history.map((h) => h.eval), full.history.map((h) => h.eval));
  assert.deepEqual(await snapshot(c.generator), await snapshot(a.generator), "bit-identical generator");
  for (const m of [a, c]) {
    m.generator.dispose();
    m.classifier.dispose();
  }
});

gpuTest("atop: resuming with another config is refused; an unknown mode is named", async () => {
  const { classifier, generator } = models();
  const dir = new RunFolder(await Deno.makeTempDir());
  await fineTunePurifier(atopConfig("clean", { stopAfterSteps: 1 }), generator, classifier, dir, quiet);
  await assert.rejects(
    () =>
      fineTunePurifier(atopConfig("clean", { lambda: 0.5 }), generator, classifier, dir, {
        ...quiet,
        resume: true,
      }),
    /config differs in lambda/,
  );
  await assert.rejects(
    () => fineTunePurifier(atopConfig("pgd" as AtopMode), generator, classifier, dir, quiet),
    /unknown mode "pgd" \(fgsm-transfer, adaptive, clean\)/,
  );
  classifier.dispose();
  generator.dispose();
});

gpuTest(
  "PurifiedClassifier: fresh randomness per call, shared draws reproduce, output mapped to [0, 1]",
  async () => {
    const { classifier, generator } = models();
    classifier.eval();
    const pipeline = new PurifiedClassifier(new RandomTransform({ kind: "rt2" }), generator, classifier);
    const x = rand([4, 1, 28, 28]);
    const a = await pipeline.model(x).toArray(), b = await pipeline.model(x).toArray();
    assert.ok(a.some((v, i) => v !== b[i]), "two calls draw different masks and noise");
    const draw = pipeline.transform.draw(x.shape);
    const c = await pipeline.logits(x, draw).toArray(), d = await pipeline.logits(x, draw).toArray();
    assert.deepEqual(c, d, "one draw, one result");
    const purified = await pipeline.purify(x, draw).toArray();
    const raw = await toUnit(generator.forward(pipeline.transform.apply(x, draw))).toArray();
    assert.deepEqual(purified, raw, "(g(t(x)) + 1) / 2");
    assert.ok(purified.every((v) => v >= 0 && v <= 1));
    classifier.dispose();
    generator.dispose();
  },
);
