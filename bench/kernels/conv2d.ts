/**
 * conv2d on the ResNet layer (bench/peers/workloads.ts: batch 64, 64 -> 64 channels, 32x32, 3x3,
 * pad 1): forward, backward-data and backward-filter, each 2·N·Cout·Ho·Wo·Cin·9 FLOP. The backward
 * passes are timed alone through their entry points (what the gradient rule calls).
 * With `variants`, extra rows force each kernel variant ("cpu": direct register-blocked,
 * "gpu": tiled implicit GEMM), interleaved in one run so their ratio survives a noisy machine.
 *
 * Run standalone: `XDG_RUNTIME_DIR=/tmp deno run -A bench/kernels/conv2d.ts [--variants]`
 */
import { type BenchRow, rate, timeGpu } from "../harness.ts";
import { CONV, WORK } from "../peers/workloads.ts";
import { initWebGpu } from "../../src/device/runtime.ts";
import {
  conv2d,
  conv2dBackwardData,
  conv2dBackwardFilter,
  type Conv2dOptions,
  type Conv2dVariant,
} from "../../src/ops/conv2d.ts";
import { randn } from "../../src/ops/random.ts";

export async function benchConv2d({ variants = false } = {}): Promise<BenchRow[]> {
  await initWebGpu({ quiet: true });
  const { batch, channels: c, size, kernel: k } = CONV;
  const x = randn([batch, c, size, size], { seed: 1 });
  const w = randn([c, c, k, k], { seed: 2, std: 0.05 });
  const dy = randn([batch, c, size, size], { seed: 4 });
  const timing = { warmup: 1, iters: 3, minMs: 500 };
  const rows: BenchRow[] = [];
  const runs: [Conv2dVariant | undefined, string, string][] = [[undefined, "", "ours"]];
  if (variants) runs.push(["cpu", " [cpu kernels]", "ours-cpu"], ["gpu", " [gpu kernels]", "ours-gpu"]);
  try {
    for (const [variant, tag, impl] of runs) {
      const options: Conv2dOptions = { padding: 1, variant };
      const passes = [
        // No bias, as the peers' (and a ResNet layer before its batchnorm).
        [WORK.convForward, () => conv2d(x, w, undefined, options).dispose()],
        [WORK.convBackwardData, () => conv2dBackwardData(dy, w, x.shape, options).dispose()],
        [WORK.convBackwardFilter, () => conv2dBackwardFilter(x, dy, w.shape, options).dispose()],
      ] as const;
      for (const [work, fn] of passes) {
        rows.push({ ...work, name: work.name + tag, impl, msPerIter: await timeGpu(fn, timing) });
      }
    }
  } finally {
    [x, w, dy].forEach((t) => t.dispose());
  }
  return rows;
}

if (import.meta.main) {
  await initWebGpu();
  for (const row of await benchConv2d({ variants: Deno.args.includes("--variants") })) {
    console.log(`${row.name.padEnd(52)} ${row.msPerIter.toFixed(1).padStart(8)} ms  ${rate(row)}`);
  }
}
