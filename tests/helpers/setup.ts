/**
 * Shared test set-up: one device for the whole test process, with every op output poisoned
 * (NaN) before the op runs so elements a kernel forgets to write make the test fail.
 */
import { type Gpu, initWebGpu } from "../../src/device/mod.ts";

let gpu: Gpu | null = null;

export async function testGpu(): Promise<Gpu> {
  if (!gpu) {
    gpu = await initWebGpu({ poisonOutputs: true, quiet: true });
    // Destroy the device before the process tears down: left to the exit, wgpu's GL backend
    // sometimes aborted it (glibc "corrupted size vs. prev_size in fastbins") after every test
    // had passed, failing the GL smoke run.
    globalThis.addEventListener("unload", () => gpu?.destroy());
  }
  return gpu;
}

/** Deno.test for GPU code: WebGPU keeps resources across tests by design, so those sanitizers are off. */
export function gpuTest(name: string, fn: (gpu: Gpu) => Promise<void> | void): void {
  Deno.test({
    name,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const g = await testGpu();
      await fn(g);
      g.throwIfFailed();
    },
  });
}
