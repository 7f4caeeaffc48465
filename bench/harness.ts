/**
 * Benchmark timing: run `fn` (which records GPU work) after warm-up, wait for the GPU to
 * drain, and report the mean time per iteration. Readback's ~10 ms floor is paid once per
 * measurement, not per iteration.
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

export async function timeGpu(fn: () => void, { warmup = 2, iters = 5, minMs = 300 } = {}): Promise<number> {
  const gpu = currentGpu();
  for (let i = 0; i < warmup; i++) fn();
  await gpu.sync();
  let n = 0;
  const start = performance.now();
  while (n < iters || performance.now() - start < minMs) {
    fn();
    n++;
    if (n % 4 === 0) await gpu.sync();
  }
  await gpu.sync();
  return (performance.now() - start) / n;
}

export function rate(row: BenchRow): string {
  const s = row.msPerIter / 1000;
  if (row.flop) return `${(row.flop / s / 1e9).toFixed(1)} GFLOP/s`;
  if (row.bytes) return `${(row.bytes / s / 1e9).toFixed(2)} GB/s`;
  if (row.items) return `${(row.items / s).toFixed(1)} items/s`;
  return `${row.msPerIter.toFixed(2)} ms`;
}
