/**
 * One training step of ResNet-8 (widths 16-32-64) on a batch of 64 CIFAR-sized images:
 * forward, softmax cross-entropy, backward, SGD momentum 0.9 — the same workload as the tfjs
 * peer's "resnet8 train step b64" row. No readback inside the timed steps.
 *
 * Run standalone: `XDG_RUNTIME_DIR=/tmp deno run -A bench/kernels/resnet8.ts`
 */
import { type BenchRow, rate, timeGpu } from "../harness.ts";
import { WORK } from "../peers/workloads.ts";
import { gradScope } from "../../src/autograd/backward.ts";
import { initWebGpu } from "../../src/device/runtime.ts";
import { createModel } from "../../src/models/zoo.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { manualSeed, rand } from "../../src/ops/random.ts";
import { SGD } from "../../src/optim/mod.ts";
import { tidy } from "../../src/tensor/scope.ts";

export async function benchResnet8Step(options: { log?: (s: string) => void } = {}): Promise<BenchRow[]> {
  await initWebGpu({ quiet: true });
  manualSeed(1);
  const model = createModel("resnet8", { inChannels: 3, numClasses: 10, dataset: "none" });
  const optimizer = new SGD({ params: model.namedParameters(), lr: 0.01, momentum: 0.9 });
  const x = rand([64, 3, 32, 32], { seed: 2 });
  const y = fromArray(Int32Array.from({ length: 64 }, (_, i) => i % 10));
  const lossOnBatch = () => tidy(() => crossEntropy(model.forward(x), y));
  const step = () => {
    optimizer.zeroGrad();
    gradScope(() => crossEntropy(model.forward(x), y).backward());
    optimizer.step();
  };
  model.train();
  const before = lossOnBatch();
  const ms = await timeGpu(step, { warmup: 2, iters: 10, minMs: 2000, keepOperandCopies: true });
  const after = lossOnBatch();
  const [b, a] = [await before.item(), await after.item()];
  options.log?.(`  resnet8 loss on the fixed batch: ${b.toFixed(4)} -> ${a.toFixed(4)}`);
  if (!(a < b)) throw new Error(`resnet8 bench: loss did not decrease (${b} -> ${a})`);
  for (const t of [before, after, x, y]) t.dispose();
  optimizer.disposeState();
  model.dispose();
  return [{ ...WORK.resnet8Step, impl: "ours", msPerIter: ms }];
}

if (import.meta.main) {
  for (const row of await benchResnet8Step({ log: console.log })) {
    console.log(`${row.name}: ${row.msPerIter.toFixed(1)} ms, ${rate(row)}`);
  }
}
