/**
 * Smoke subset, run on both wgpu backends in CI (Vulkan lavapipe and GL llvmpipe): device
 * creation, a kernel, readback and a gradient, and matmul with its gradients (conv_test.ts has
 * conv2d). `deno task test:smoke` (tests/smoke/run.ts lists the modules) runs them with the
 * batchnorm and small-conv-net training tests, one process per module; the full conv2d and matmul
 * suites stay on the default backend, since compiling their many shapes on GL takes longer than
 * CI allows (matmul's alone ~5 minutes with an empty Mesa cache).
 */
import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { mul } from "../../src/ops/arithmetic.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { matmul } from "../../src/ops/matmul.ts";
import { sum } from "../../src/ops/reduce.ts";
import { checkOp } from "../helpers/check_op.ts";
import { Product } from "../helpers/matmul_reference.ts";
import { Rng } from "../helpers/reference.ts";
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

gpuTest("smoke: matmul forward and gradients on a ragged shape", async () => {
  const [M, N, K] = [33, 17, 65];
  const product = new Product(1, M, N, K, false, false);
  const rng = new Rng(7);
  for (const variant of ["cpu", "gpu"] as const) {
    await checkOp({
      name: `matmul ${variant} M=${M} N=${N} K=${K}`,
      inputs: [rng.array([M, K]), rng.array([K, N])],
      gpu: (a, b) => matmul(a, b, { variant }),
      ref: (a, b) => product.forward(a, b, [M, N]),
      refGrad: (dy, a, b) => product.backward(dy, a, b),
      fdSamples: 8,
    });
  }
});
