/**
 * Benchmark timing: run `fn` (which records GPU work) after warm-up, wait for the GPU to
 * drain, and report the mean time per iteration. A sync costs a ~10 ms floor (Deno's
 * onSubmittedWorkDone polls the device every ~10 ms: measured 11.1 ms on an idle queue, the
 * same for mapAsync), so the loop syncs only every `syncEvery(...)` calls: enough calls to queue
 * ~1 s of work, which keeps the floor near 1 % of what is measured, as in a training loop that
 * reads its metrics every few dozen steps. (Until 2026-12-06 ~250 ms: up to ~4 %.)
 */
import { currentGpu } from "../src/device/runtime.ts";

export interface BenchRow {
  /** What was measured, e.g. "conv2d forward 64x64x32x32 3x3". */
  name: string;
  /** Implementation: "ours", "tfjs-webgpu", "pytorch-cpu". */
  impl: string;
  msPerIter: number;
  /** Work per iteration in FLOP (for GFLOP/s) or bytes (for GB/s), or items (images/s). */
  flop?: number;
  bytes?: number;
  items?: number;
}

export interface TimeOptions {
  /** Calls before timing (pipeline compilation, pool warm-up). */
  warmup?: number;
  /** At least this many calls per measurement ... */
  iters?: number;
  /** ... and at least this long. */
  minMs?: number;
  /**
   * Measurements; the best counts. On a shared machine the noise (other tenants) only ever adds
   * time, so the minimum is the stable statistic; one measurement varied by up to ±20 % here.
   */
  rounds?: number;
}

/** Calls between syncs for a call that took `probeMs` (sync included): ~1 s of work, 4 to 128. */
function syncEvery(probeMs: number): number {
  return Math.min(128, Math.max(4, Math.ceil(1000 / Math.max(probeMs, 0.1))));
}

/**
 * Mean ms per call of `run` (which records GPU work), `sync` waiting for the GPU to drain. Shared
 * by our kernels (`timeGpu`) and the tfjs peer, so both sides are timed the same way.
 */
export async function timeCalls(
  run: () => void,
  sync: () => Promise<void>,
  { warmup = 2, iters = 5, minMs = 300, rounds = 3 }: TimeOptions = {},
): Promise<number> {
  for (let i = 0; i < warmup; i++) run();
  await sync();
  let every = 4;
  if (iters > 1 || minMs > 0) {
    const probe = performance.now();
    run();
    await sync();
    every = syncEvery(performance.now() - probe);
  }
  let best = Infinity;
  for (let round = 0; round < rounds; round++) {
    let n = 0;
    const start = performance.now();
    while (n < iters || performance.now() - start < minMs) {
      run();
      n++;
      if (n % every === 0) await sync();
    }
    await sync();
    best = Math.min(best, (performance.now() - start) / n);
  }
  return best;
}

/**
 * `timeCalls` for work recorded on our device. A kernel row calls one op on the same inputs over
 * and over, so it would take their operand copies (src/device/operand_copies.ts) from the call
 * before and time the kernel without them, while an op in a training step copies the fresh
 * activations it reads. Copies are therefore not kept between calls, unless `keepOperandCopies`
 * (a whole training step, which keeps them as training does).
 */
export async function timeGpu(
  fn: () => void,
  options: TimeOptions & { keepOperandCopies?: boolean } = {},
): Promise<number> {
  const gpu = currentGpu();
  const budget = gpu.tunables.maxIdleOperandCopyBytes;
  if (!options.keepOperandCopies) {
    gpu.tunables.maxIdleOperandCopyBytes = 0;
    gpu.operandCopies.clear();
  }
  try {
    return await timeCalls(fn, () => gpu.sync(), options);
  } finally {
    gpu.tunables.maxIdleOperandCopyBytes = budget;
  }
}

export function rate(row: BenchRow): string {
  const s = row.msPerIter / 1000;
  if (row.flop) return `${(row.flop / s / 1e9).toFixed(1)} GFLOP/s`;
  if (row.bytes) return `${(row.bytes / s / 1e9).toFixed(2)} GB/s`;
  if (row.items) return `${(row.items / s).toFixed(1)} items/s`;
  return `${row.msPerIter.toFixed(2)} ms`;
}
