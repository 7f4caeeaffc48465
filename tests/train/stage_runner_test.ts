/**
 * The training loop shared by every stage (src/train/stage_runner.ts), on a toy stage whose step
 * returns a known sum: a run killed inside an epoch's evaluation, or stopped inside an epoch with
 * metric sums not yet read back, resumes into the same history and loss curve as an uninterrupted
 * run; a resumed epoch's progress bar counts the batches done before the kill.
 */
import assert from "node:assert/strict";
import { DataLoader } from "../../src/data/loader.ts";
import { readJsonLines } from "../../src/io/report.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { Progress } from "../../src/train/progress.ts";
import { RunFolder } from "../../src/train/run_folder.ts";
import { type EpochSummary, runStage, type StageDefinition } from "../../src/train/stage_runner.ts";
import { gpuTest } from "../helpers/setup.ts";

const samples = 16, batchSize = 4; // 4 steps per epoch
const dataset = {
  name: "toy",
  images: new Uint8Array(samples * 4).map((_, i) => i % 251),
  labels: new Uint8Array(samples).map((_, i) => i % 3),
  shape: [1, 2, 2] as [number, number, number],
  classes: ["a", "b", "c"],
};
const quiet = { log: () => {}, tty: false };

interface Toy {
  def: StageDefinition;
  loader: DataLoader;
}

/**
 * Two epochs; each step's sums: (step + 1) per image, and 1 per image (the loss is NaN at step
 * `nanStep`); `failEval` throws in that epoch's evaluation.
 */
function toyStage(
  settings: { logEvery: number; checkpointEvery: number; stopAfterSteps?: number },
  failEval?: number,
  nanStep?: number,
): Toy {
  const loader = new DataLoader(dataset, { batchSize, seed: 5 });
  const def: StageDefinition = {
    stage: "toy",
    config: { epochs: 2, seed: 1, stopAfterSteps: null, ...settings },
    loader,
    modules: {},
    optimizers: {},
    metrics: ["loss", "images"],
    step: (batch, step) =>
      fromArray([step === nanStep ? NaN : batch.labels.size * (step + 1), batch.labels.size], [2]),
    evaluate: (epoch) => {
      if (epoch === failEval) return Promise.reject(new Error("killed during the evaluation"));
      return Promise.resolve({ accuracy: epoch + 1 });
    },
  };
  return { def, loader };
}

/** What must match between runs: everything but wall-clock times. */
const untimed = (history: EpochSummary[]) =>
  history.map(({ epoch, train, eval: e }) => ({ epoch, train, eval: e }));

async function runToy(
  dir: string,
  settings: { logEvery: number; checkpointEvery: number; stopAfterSteps?: number },
  options: { resume?: boolean; failEval?: number; nanStep?: number } = {},
) {
  const { def, loader } = toyStage(settings, options.failEval, options.nanStep);
  try {
    return await runStage(def, new RunFolder(dir), { ...quiet, resume: options.resume });
  } finally {
    loader.dispose();
  }
}

gpuTest("stage runner: a kill during an epoch's evaluation resumes into that evaluation", async () => {
  // Checkpoints every 2 steps: the one at an epoch's last step (4, 8) must wait for its evaluation.
  const settings = { logEvery: 1, checkpointEvery: 2 };
  const full = await runToy(await Deno.makeTempDir(), settings);
  assert.deepEqual(full.history.map((h) => h.eval), [{ accuracy: 1 }, { accuracy: 2 }]);
  for (const failEval of [0, 1]) {
    const dir = await Deno.makeTempDir();
    await assert.rejects(() => runToy(dir, settings, { failEval }), /killed during the evaluation/);
    const resumed = await runToy(dir, settings, { resume: true });
    assert.equal(resumed.completed, true);
    assert.deepEqual(
      untimed(resumed.history),
      untimed(full.history),
      `killed in epoch ${failEval + 1}'s evaluation`,
    );
    assert.deepEqual(resumed.curve, full.curve);
  }
});

gpuTest(
  "stage runner: stopped inside an epoch, with sums not yet read back, the resumed run reports the same",
  async () => {
    // Readbacks at steps 3, 4 (epoch end), 6 and 8; stopped after step 2 or 5, mid-epoch. With a
    // NaN loss at step 1, the sums in the checkpoint hold NaN (JSON alone would make them 0).
    const settings = { logEvery: 3, checkpointEvery: 100 };
    for (const nanStep of [undefined, 1]) {
      const full = await runToy(await Deno.makeTempDir(), settings, { nanStep });
      assert.deepEqual(full.curve.map(([step]) => step), [3, 4, 6, 8]);
      assert.equal(Number.isNaN(full.history[0].train.loss), nanStep !== undefined);
      for (const stopAfterSteps of [2, 5]) {
        const dir = await Deno.makeTempDir();
        const stopped = await runToy(dir, { ...settings, stopAfterSteps }, { nanStep });
        assert.equal(stopped.completed, false);
        const resumed = await runToy(dir, settings, { resume: true, nanStep });
        assert.equal(resumed.completed, true);
        const what = `stopped after step ${stopAfterSteps}, NaN at step ${nanStep}`;
        assert.deepEqual(resumed.curve, full.curve, `${what}: the loss curve`);
        assert.deepEqual(untimed(resumed.history), untimed(full.history), `${what}: the epochs`);
        const log = await readJsonLines<{ type: string; step?: number }>(`${dir}/log.jsonl`);
        assert.deepEqual(log.filter((e) => e.type === "resume").map((e) => e.step), [stopAfterSteps]);
      }
    }
  },
);

Deno.test("progress: a bar resumed at unit 8 of 10 shows 8/10 done and rates only what it ran", () => {
  const lines: string[] = [];
  const progress = new Progress("epoch", 10, { tty: true, start: 8, out: (s) => lines.push(s) });
  progress.update(9);
  assert.match(lines.at(-1)!, / 90% {2}9\/10 /);
  progress.done();
  assert.match(lines.at(-2)!, / 100% {2}10\/10 /);
  // Nothing run yet: no rate, so no ETA (not one computed from the 8 units before the start).
  progress.update(8);
  assert.match(lines.at(-1)!, /80% {2}8\/10 .*ETA \?/);
});
