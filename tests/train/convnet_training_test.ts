/**
 * End-to-end check of the engine (conv2d, batchnorm, pooling, linear, cross-entropy, autograd,
 * Adam): a small conv net trained on one fixed synthetic batch must drive its loss down at
 * least tenfold. Loss is read back only before and after training.
 */
import assert from "node:assert/strict";
import { gradScope } from "../../src/autograd/backward.ts";
import { createModel } from "../../src/models/zoo.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { manualSeed } from "../../src/ops/random.ts";
import { Adam } from "../../src/optim/mod.ts";
import { tidy } from "../../src/tensor/scope.ts";
import { Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

gpuTest("a small conv net with batchnorm fits a fixed batch (loss falls >= 10x)", async (gpu) => {
  manualSeed(11);
  const rng = new Rng(5);
  const n = 32, classes = 4, size = 12;
  // Each class is a bright bar at its own position plus noise: learnable, but not trivially.
  const images = new Float32Array(n * size * size);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % classes;
    labels[i] = c;
    for (let p = 0; p < size * size; p++) {
      const row = Math.floor(p / size), col = p % size;
      const bar = c < 2 ? row === 3 + 5 * c : col === 3 + 5 * (c - 2);
      images[i * size * size + p] = Math.min(1, Math.max(0, (bar ? 0.8 : 0.2) + 0.15 * rng.uniform()));
    }
  }
  const x = fromArray(images, [n, 1, size, size]);
  const y = fromArray(labels);
  const model = createModel("small-cnn", { inChannels: 1, numClasses: classes, dataset: "none" });
  const opt = new Adam({ params: model.namedParameters(), lr: 0.01 });
  const loss = () => tidy(() => crossEntropy(model.forward(x), y));
  const before = loss();
  const bytesBefore = gpu.memory().bytesInUse;
  for (let step = 0; step < 200; step++) {
    opt.zeroGrad();
    gradScope(() => crossEntropy(model.forward(x), y).backward());
    opt.step();
  }
  // After the first step allocates grads and optimizer state, memory must stay flat.
  const growth = gpu.memory().bytesInUse - bytesBefore;
  const after = loss();
  const [b, a] = [await before.item(), await after.item()];
  assert.ok(a * 10 <= b, `loss ${b.toFixed(4)} -> ${a.toFixed(4)} did not fall tenfold`);
  const paramBytes = model.parameters().reduce((s, p) => s + p.size * 4, 0);
  assert.ok(growth <= 4 * paramBytes + 65536, `memory grew by ${growth} bytes over 200 steps`);
  opt.zeroGrad();
  opt.disposeState();
  for (const t of [x, y, before, after]) t.dispose();
  model.dispose();
});
