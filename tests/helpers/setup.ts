/**
 * Shared test set-up: one device for the whole test process, with every op output poisoned
 * (NaN) before the op runs so elements a kernel forgets to write make the test fail.
 */
import { type Gpu, initWebGpu } from "../../src/device/mod.ts";

let gpu: Gpu | null = null;

export async function testGpu(): Promise<Gpu> {
  gpu ??= await initWebGpu({ poisonOutputs: true, quiet: true });
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
