/**
 * Shared models for the attack tests.
 *
 * - `trainedSmallClassifier()`: small-cnn trained briefly on a class-balanced subset of real
 *   Fashion-MNIST (Adam, a few seconds on lavapipe), then put in eval mode, with a fixed,
 *   class-balanced batch of test images it mostly classifies correctly. Memoised per process:
 *   every test in a file shares one model (do not dispose it).
 * - `noisyModel(base, sigma)`: a random model, `base(x + sigma·n)` with a fresh Gaussian `n` on
 *   every call (the simplest randomised defence, for EOT tests).
 * - `linearModel(w, b, d, k)`: logits = flatten(x)·w + b, a tiny deterministic model built from ops.
 */
import { gradScope } from "../../src/autograd/backward.ts";
import type { Model } from "../../src/attacks/types.ts";
import { loadDataset } from "../../src/data/by_name.ts";
import { subset } from "../../src/data/dataset.ts";
import { balancedOrder, DataLoader, GpuDataset } from "../../src/data/loader.ts";
import { createModel } from "../../src/models/zoo.ts";
import type { Module } from "../../src/nn/module.ts";
import { add } from "../../src/ops/arithmetic.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { matmul } from "../../src/ops/matmul.ts";
import { manualSeed, randn } from "../../src/ops/random.ts";
import { Adam } from "../../src/optim/mod.ts";
import { keep } from "../../src/tensor/scope.ts";
import { reshape, slice } from "../../src/ops/shape_ops.ts";
import { correctCount } from "../../src/ops/metrics.ts";
import { tidy } from "../../src/tensor/scope.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { fromArray } from "../../src/ops/creation.ts";

export interface TrainedClassifier {
  /** The classifier as an attack sees it: x [N,1,28,28] in [0,1] -> logits [N,10]. */
  model: Model;
  /** The underlying module (eval mode). */
  module: Module;
  /** A class-balanced batch of `testCount` Fashion-MNIST test images, f32 [N,1,28,28]. */
  x: Tensor;
  /** Its labels, i32 [N]. */
  y: Tensor;
  /** Training wall time (ms), for information. */
  trainMs: number;
}

export interface TrainOptions {
  /** Adam steps (default 150). */
  steps?: number;
  /** Training batch size (default 64). */
  batchSize?: number;
  /** Number of test images returned in x, y (default 100, class-balanced). */
  testCount?: number;
}

const cache = new Map<string, Promise<TrainedClassifier>>();

/**
 * small-cnn (width 8) trained with Adam (lr 0.01) on the first 2,000 images of the
 * class-balanced Fashion-MNIST training order; reaches ~70-80 % test accuracy. Memoised.
 */
export function trainedSmallClassifier(options: TrainOptions = {}): Promise<TrainedClassifier> {
  const key = JSON.stringify(options);
  let p = cache.get(key);
  if (!p) {
    p = train(options);
    cache.set(key, p);
  }
  return p;
}

async function train(options: TrainOptions): Promise<TrainedClassifier> {
  const steps = options.steps ?? 150, batchSize = options.batchSize ?? 64;
  const testCount = options.testCount ?? 100;
  const started = performance.now();
  const [trainHost, testHost] = await Promise.all([
    loadDataset("fashion-mnist", "train"),
    loadDataset("fashion-mnist", "test"),
  ]);
  // Upload only the subsets used (2,000 training images, the balanced test batch).
  const trainSet = GpuDataset.upload(subset(trainHost, balancedOrder(trainHost.labels).subarray(0, 2000)));
  const testSet = GpuDataset.upload(subset(testHost, balancedOrder(testHost.labels).subarray(0, testCount)));
  manualSeed(1234);
  const module = createModel("small-cnn", { inChannels: 1, numClasses: 10, dataset: "fashion-mnist" });
  const optimizer = new Adam({ params: module.namedParameters(), lr: 0.01 });
  const loader = new DataLoader(trainSet, { batchSize, shuffle: true, seed: 7, dropLast: true });
  module.train();
  for (let step = 0; step < steps; step++) {
    const batch = loader.next();
    optimizer.zeroGrad();
    gradScope(() => crossEntropy(module.forward(batch.images), batch.labels).backward());
    optimizer.step();
    batch.images.dispose();
    batch.labels.dispose();
  }
  optimizer.zeroGrad();
  optimizer.disposeState();
  loader.dispose();
  module.eval();
  const testLoader = new DataLoader(testSet, { batchSize: testCount, shuffle: false });
  const batch = testLoader.next();
  testLoader.dispose();
  trainSet.dispose();
  testSet.dispose();
  const x = keep(batch.images), y = keep(batch.labels);
  await y.toArray(); // wait for the GPU so trainMs is the real cost
  return { model: (input) => module.forward(input), module, x, y, trainMs: performance.now() - started };
}

/**
 * A random model: `base(x + sigma·n)`, n ~ N(0, 1) drawn afresh (default generator) on every
 * call. The noise is a constant for autograd, so d/dx flows straight through to `base`.
 */
export function noisyModel(base: Model, sigma: number): Model {
  // No tidy() here: inside grad() the tape still needs the intermediates; grad's scope frees them.
  return (x) => base(add(x, randn(x.shape, { std: sigma })));
}

/** logits = flatten(x) [N, D] · w [D, K] + b [K]: deterministic, cheap, differentiable. */
export function linearModel(w: Float32Array, b: Float32Array, d: number, k: number): Model {
  const wt = keep(fromArray(w, [d, k])), bt = keep(fromArray(b, [k]));
  return (x) => add(matmul(reshape(x, [x.shape[0], d]), wt), bt);
}

/** How many samples of x the model classifies correctly (one readback). */
export async function correctCountOf(model: Model, x: Tensor, y: Tensor): Promise<number> {
  const c = tidy(() => correctCount(model(x), y));
  const v = (await c.toArray())[0];
  c.dispose();
  return v;
}

/** The model's accuracy on x, as a fraction. */
export async function accuracyOf(model: Model, x: Tensor, y: Tensor): Promise<number> {
  return (await correctCountOf(model, x, y)) / y.shape[0];
}

/**
 * The trained classifier with the first `n` images and labels of its test batch (kept for the
 * process, like the memoised classifier itself).
 */
export async function trainedClassifierHead(n: number): Promise<{ model: Model; x: Tensor; y: Tensor }> {
  const t = await trainedSmallClassifier();
  const x = keep(slice(t.x, [0, 0, 0, 0], [n, ...t.x.shape.slice(1)]));
  const y = keep(slice(t.y.alias([t.y.shape[0], 1]), [0, 0], [n, 1]).alias([n]));
  return { model: t.model, x, y };
}
