/**
 * Smoke subset, run on both wgpu backends in CI (Vulkan lavapipe and GL llvmpipe): device
 * creation, a kernel, readback and a gradient.
 */
import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { mul } from "../../src/ops/arithmetic.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { sum } from "../../src/ops/reduce.ts";
import { gpuTest } from "../helpers/setup.ts";

gpuTest("smoke: adapter, kernel, readback and gradient", async (gpu) => {
  console.log(
    `adapter: ${gpu.adapterName} (${gpu.adapterClass}), backend ${
      Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default"
    }`,
  );
  const x = fromArray([1, 2, 3, 4]);
  const { value, grads } = grad((t) => sum(mul(t, t)), [x]);
  assert.equal(await value.item(), 30);
  assert.deepEqual([...await grads[0].toArray()], [2, 4, 6, 8]);
});
