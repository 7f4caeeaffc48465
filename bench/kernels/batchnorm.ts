/**
 * Batchnorm kernels on x = [64, 64, 32, 32]: training forward (stats pass + normalise pass)
 * and backward (sums pass + data pass), in GB/s of minimum traffic (bench/peers/workloads.ts:
 * forward 3 tensors, backward 5). The backward is timed alone by calling the recorded gradient
 * rule directly. Extra rows (not paired with peers): eval forward, fused ReLU, and each
 * reduction variant forced, so the cpu/gpu variants compare within one run.
 *
 * Run standalone: `XDG_RUNTIME_DIR=/tmp deno run -A bench/kernels/batchnorm.ts`
 */
import { type BenchRow, rate, timeGpu } from "../harness.ts";
import { CONV, WORK } from "../peers/workloads.ts";
import { Tape, withTape } from "../../src/autograd/tape.ts";
import { initWebGpu } from "../../src/device/runtime.ts";
import { batchNorm2d, type BatchNormOptions, batchNormTuning } from "../../src/ops/batchnorm.ts";
import { ones, zeros } from "../../src/ops/creation.ts";
import { rand, randn } from "../../src/ops/random.ts";
import type { BatchNormVariant } from "../../shaders/batchnorm.ts";

export async function benchBatchnorm(): Promise<BenchRow[]> {
  await initWebGpu({ quiet: true });
  const { batch, channels: c, size } = CONV;
  const shape = [batch, c, size, size];
  const x = randn(shape, { seed: 1 });
  const dy = randn(shape, { seed: 2 });
  const gamma = rand([c], { seed: 3, low: 0.5, high: 1.5 });
  const beta = randn([c], { seed: 4 });
  const runningMean = zeros([c]), runningVar = ones([c]);
  const rows: BenchRow[] = [];
  const timing = { warmup: 2, iters: 5, minMs: 500 };

  const forward = (options: BatchNormOptions) => () =>
    batchNorm2d(x, gamma, beta, runningMean, runningVar, options).dispose();
  /** Records one forward, then times its gradient rule alone. */
  const backward = async (options: BatchNormOptions): Promise<number> => {
    const tape = new Tape("inputs", [x, gamma, beta]);
    const y = withTape(tape, () => batchNorm2d(x, gamma, beta, runningMean, runningVar, options));
    const rule = tape.nodes[0].backward;
    const ms = await timeGpu(() => {
      for (const g of withTape(null, () => rule(dy, () => undefined))) g?.dispose();
    }, timing);
    y.dispose();
    return ms;
  };

  const variants: (BatchNormVariant | null)[] = [null, "cpu", "gpu"];
  try {
    for (const v of variants) {
      batchNormTuning.variant = v;
      const tag = v ? ` [${v} reduction]` : "";
      const impl = v ? `ours-${v}` : "ours";
      const train = { training: true };
      rows.push({
        ...WORK.batchnormForward,
        name: WORK.batchnormForward.name + tag,
        impl,
        msPerIter: await timeGpu(forward(train), timing),
      });
      rows.push({
        ...WORK.batchnormBackward,
        name: WORK.batchnormBackward.name + tag,
        impl,
        msPerIter: await backward(train),
      });
      if (v) continue;
      const relu = { training: true, relu: true };
      rows.push({
        ...WORK.batchnormForward,
        name: WORK.batchnormForward.name + " +relu",
        impl,
        msPerIter: await timeGpu(forward(relu), timing),
      });
      rows.push({
        ...WORK.batchnormBackward,
        name: WORK.batchnormBackward.name + " +relu",
        impl,
        msPerIter: await backward(relu),
      });
      // Eval: read x, write y (2 tensors).
      const evalMode = { training: false };
      const act = batch * c * size * size * 4;
      rows.push({
        name: "batchnorm eval forward 64x64x32x32",
        impl,
        bytes: 2 * act,
        msPerIter: await timeGpu(forward(evalMode), timing),
      });
      // Eval backward: the dx pass reads no x (the statistics are fixed), so 4 tensors.
      rows.push({
        ...WORK.batchnormBackward,
        name: "batchnorm eval backward 64x64x32x32",
        impl,
        bytes: 4 * act,
        msPerIter: await backward(evalMode),
      });
    }
  } finally {
    batchNormTuning.variant = null;
    for (const t of [x, dy, gamma, beta, runningMean, runningVar]) t.dispose();
  }
  return rows;
}

if (import.meta.main) {
  const rows = await benchBatchnorm();
  console.log(`${"benchmark".padEnd(50)} ${"impl".padEnd(10)} ${"ms/iter".padStart(9)}  rate`);
  for (const row of rows) {
    console.log(
      `${row.name.padEnd(50)} ${row.impl.padEnd(10)} ${row.msPerIter.toFixed(2).padStart(9)}  ${rate(row)}`,
    );
  }
}
