import assert from "node:assert/strict";
import type { Module } from "../../src/nn/module.ts";
import { readClassifierCheckpoint, trainClassifier } from "../../src/train/classifier.ts";
import { saveCheckpoint } from "../../src/io/checkpoint.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { type ClassifierConfig, defaultClassifierConfig } from "../../src/train/classifier_options.ts";
import { RunFolder } from "../../src/train/run_folder.ts";
import { gpuTest } from "../helpers/setup.ts";

const tiny = defaultClassifierConfig({
  model: "small-cnn",
  limit: 192,
  testLimit: 100,
  epochs: 2,
  batchSize: 32,
  logEvery: 1,
  checkpointEvery: 4,
  evalBatchSize: 100,
  seed: 3,
});
const quiet = { log: () => {}, tty: false };

async function weights(model: Module) {
  const out: Record<string, number[]> = {};
  for (const [k, t] of Object.entries(model.stateDict())) out[k] = Array.from(await t.toArray());
  return out;
}

/** Trains `config` straight through, and again killed after `killAt` steps then resumed. */
async function resumeMatches(config: ClassifierConfig, steps: number, killAt: number) {
  const dirA = await Deno.makeTempDir(), dirB = await Deno.makeTempDir();
  const a = await trainClassifier(config, new RunFolder(dirA), quiet);
  assert.equal(a.result.step, steps);
  assert.equal(a.result.losses.length, steps);

  // "Kill" mid-epoch, after a checkpoint: the stage writes a checkpoint and returns, as a
  // killed process would have left its last one... then resume.
  const killed = await trainClassifier({ ...config, stopAfterSteps: killAt }, new RunFolder(dirB), quiet);
  assert.equal(killed.result.completed, false);
  killed.model.dispose();
  const resumedAt = performance.now();
  const b = await trainClassifier(config, new RunFolder(dirB), { ...quiet, resume: true });
  const ownSeconds = (performance.now() - resumedAt) / 1000;
  assert.equal(b.result.completed, true);
  assert.deepEqual(b.result.losses, a.result.losses, "same loss at every step");
  assert.deepEqual(await weights(b.model), await weights(a.model), "bit-identical weights and running stats");
  assert.equal(b.result.testAccuracy, a.result.testAccuracy);
  // The wall time counts the killed process's too; epoch lines in the log carry their step.
  assert.ok(
    b.result.wallSeconds > ownSeconds + 0.5 * killed.result.wallSeconds,
    `${b.result.wallSeconds} s: ${ownSeconds} s of its own and ${killed.result.wallSeconds} s before`,
  );
  const lines = (await Deno.readTextFile(`${dirB}/log.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  const epochs = lines.filter((l) => l.type === "epoch");
  assert.ok(epochs.length > 0 && epochs.every((l) => Number.isInteger(l.step) && l.step > 0));
  a.model.dispose();
  b.model.dispose();
}

gpuTest("classifier: a killed and resumed run equals the uninterrupted run step for step", async () => {
  await resumeMatches(tiny, 12, 7);
});

gpuTest(
  "at stage (PGD adversarial training): resume is exact too (attack seeds follow the step)",
  async () => {
    await resumeMatches({ ...tiny, adversarial: "pgd", advSteps: 2, limit: 96, checkpointEvery: 2 }, 6, 3);
  },
);

gpuTest("classifier: resuming with a different config is refused, naming the differences", async () => {
  const dir = await Deno.makeTempDir();
  const r = await trainClassifier({ ...tiny, epochs: 1, stopAfterSteps: 2 }, new RunFolder(dir), quiet);
  r.model.dispose();
  await assert.rejects(
    () => trainClassifier({ ...tiny, epochs: 1, lr: 0.5 }, new RunFolder(dir), { ...quiet, resume: true }),
    /config differs in lr/,
  );
  await assert.rejects(
    () => trainClassifier(tiny, new RunFolder(dir + "/nothing"), { ...quiet, resume: true }),
    /cannot resume: no checkpoint at .*nothing\/checkpoints\/classifier\.safetensors; .*without --resume/,
  );
});

gpuTest("readClassifierCheckpoint: --normalize applies to imported weights only", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = fromArray([1, 2], [2]);
    // Weights without our metadata (as exported from PyTorch) take the given normalisation.
    await saveCheckpoint(`${dir}/imported.safetensors`, { tensors: { "linear.bias": w } });
    const none = { mean: [0], std: [1] };
    const imported = await readClassifierCheckpoint(`${dir}/imported.safetensors`, {
      model: "resnet8",
      dataset: "cifar10",
      normalize: none,
    });
    assert.equal(imported.imported, true);
    assert.deepEqual(imported.config.normalize, none);
    const plain = await readClassifierCheckpoint(`${dir}/imported.safetensors`, {
      model: "resnet8",
      dataset: "cifar10",
    });
    assert.equal(plain.config.normalize, undefined, "the dataset's statistics by default");
    // A RobustBench WideResNet: raw [0, 1] inputs by default, its unused sub_block1 skipped.
    await saveCheckpoint(`${dir}/robustbench.safetensors`, {
      tensors: { "fc.bias": w, "sub_block1.layer.0.bn1.weight": w, "bn1.num_batches_tracked": w },
    });
    const wrn = await readClassifierCheckpoint(`${dir}/robustbench.safetensors`, {
      model: "wrn-28-10",
      dataset: "cifar10",
    });
    assert.deepEqual(wrn.config.normalize, none);
    assert.deepEqual([...wrn.weights.tensors.keys()], ["fc.bias"]);
    // Ours carry their config: --normalize would contradict how they were trained.
    const config = defaultClassifierConfig({ model: "resnet8", dataset: "cifar10" });
    await saveCheckpoint(`${dir}/ours.safetensors`, {
      tensors: { "model.linear.bias": w },
      metadata: { config },
    });
    // Restating the normalisation a checkpoint was trained with is fine (a study trained with
    // --classifier-normalize reads its classifier back with it).
    await saveCheckpoint(`${dir}/raw.safetensors`, {
      tensors: { "model.linear.bias": w },
      metadata: { config: { ...config, normalize: none } },
    });
    assert.deepEqual(
      (await readClassifierCheckpoint(`${dir}/raw.safetensors`, { normalize: none })).config.normalize,
      none,
    );
    const ours = await readClassifierCheckpoint(`${dir}/ours.safetensors`, {});
    assert.equal(ours.imported, false);
    // A purifier's stage checkpoint is not a classifier's (it read as "unknown model 'undefined'").
    await saveCheckpoint(`${dir}/atop.safetensors`, {
      tensors: { "generator.conv.weight": w },
      metadata: { stage: "atop-adaptive", config: { lambda: 0.3 } },
    });
    await assert.rejects(
      readClassifierCheckpoint(`${dir}/atop.safetensors`, {}),
      /atop\.safetensors is a 'atop-adaptive' checkpoint with no classifier in it \(tensors generator\.conv\.weight/,
    );
    await assert.rejects(
      readClassifierCheckpoint(`${dir}/ours.safetensors`, { normalize: none }),
      /carries its training config \(and normalisation\): an input normalisation \(--normalize, --classifier-normalize\) is for weights without it/,
    );
    w.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
