/**
 * The pretrain stage with its GAN term: killed and resumed, it ends on the same checkpoint as
 * the uninterrupted stage, bit for bit: generator, discriminator (spectral-norm u/v buffers
 * included) and both Adam states.
 */
import assert from "node:assert/strict";
import { loadCheckpoint } from "../../src/io/checkpoint.ts";
import { buildProfile } from "../../src/study/config.ts";
import { type PretrainConfig, pretrainPurifier } from "../../src/train/pretrain.ts";
import { RunFolder } from "../../src/train/run_folder.ts";
import { gpuTest } from "../helpers/setup.ts";

const quiet = { log: () => {}, tty: false };

/** The final checkpoint's tensors, as host arrays by name. */
async function checkpointTensors(run: RunFolder): Promise<Map<string, number[]>> {
  const ckpt = await loadCheckpoint(run.checkpointPath("pretrain"));
  return new Map([...ckpt.tensors].map(([name, t]) => [name, Array.from(t.data as ArrayLike<number>)]));
}

gpuTest(
  "pretrain with the GAN term: a killed and resumed stage ends on the uninterrupted one's checkpoint",
  async () => {
    const config: PretrainConfig = {
      ...buildProfile("tiny").pretrain,
      gan: true,
      epochs: 2,
      limit: 48,
      batchSize: 16,
      logEvery: 1,
      checkpointEvery: 2,
      evalPoints: 20,
      evalBatchSize: 20,
    };
    const full = new RunFolder(await Deno.makeTempDir());
    const a = await pretrainPurifier(config, full, quiet);
    assert.equal(a.result.step, 6);
    a.generator.dispose();

    const killedRun = new RunFolder(await Deno.makeTempDir());
    const killed = await pretrainPurifier({ ...config, stopAfterSteps: 3 }, killedRun, quiet);
    assert.equal(killed.result.completed, false);
    killed.generator.dispose();
    const b = await pretrainPurifier(config, killedRun, { ...quiet, resume: true });
    assert.equal(b.result.completed, true);
    b.generator.dispose();
    assert.deepEqual(b.result.curve, a.result.curve, "the same losses (L1, D and G terms) at every step");

    const [want, got] = [await checkpointTensors(full), await checkpointTensors(killedRun)];
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (
      const prefix of ["generator.", "discriminator.", "generator_optim.", "discriminator_optim."]
    ) {
      assert.ok([...want.keys()].some((k) => k.startsWith(prefix)), `the checkpoint holds ${prefix}*`);
    }
    assert.ok([...want.keys()].some((k) => k.endsWith("weight_u")), "spectral-norm u vectors are saved");
    for (const [name, values] of want) assert.deepEqual(got.get(name), values, `${name} bit-identical`);
  },
);
