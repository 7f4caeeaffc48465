/**
 * The current device. Ops use `currentGpu()`; programs call `initWebGpu()` once at start.
 */
import { createGpu, type Gpu, type InitOptions } from "./gpu.ts";

let current: Gpu | null = null;

export async function initWebGpu(options: InitOptions = {}): Promise<Gpu> {
  if (current) return current;
  current = await createGpu(options);
  return current;
}

export function currentGpu(): Gpu {
  if (!current) {
    throw new Error("No WebGPU device: call `await initWebGpu()` before creating tensors.");
  }
  return current;
}

/** Destroys the current device (its tensors become unusable). */
export function disposeWebGpu(): void {
  current?.destroy();
  current = null;
}
