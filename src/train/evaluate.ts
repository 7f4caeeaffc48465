/** Accuracy and loss of a classifier on a dataset, computed on the GPU, read back once. */
import { noGrad } from "../autograd/tape.ts";
import { DataLoader, type GpuDataset } from "../data/loader.ts";
import type { Module } from "../nn/module.ts";
import { add } from "../ops/arithmetic.ts";
import { zeros } from "../ops/creation.ts";
import { crossEntropy } from "../ops/loss.ts";
import { correctCount } from "../ops/metrics.ts";
import { concat } from "../ops/shape_ops.ts";
import { keep, tidy } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";

export interface EvalResult {
  accuracy: number;
  loss: number;
  count: number;
}

/**
 * Evaluates in eval mode (running batchnorm statistics), restoring the previous mode after.
 * `limit` takes a class-balanced subset (the same in every run).
 */
export async function evaluateClassifier(
  model: Module,
  dataset: GpuDataset,
  options: { batchSize?: number; limit?: number | null } = {},
): Promise<EvalResult> {
  const wasTraining = model.training;
  model.eval();
  const loader = new DataLoader(dataset, {
    batchSize: options.batchSize ?? 500,
    shuffle: false,
    limit: options.limit ?? undefined,
  });
  let sums: Tensor = keep(zeros([2]));
  try {
    for (const batch of loader) {
      const next = tidy(() =>
        noGrad(() => {
          const logits = model.forward(batch.images);
          const both = concat([
            crossEntropy(logits, batch.labels, { reduction: "sum" }).alias([1]),
            correctCount(logits, batch.labels).alias([1]),
          ], 0);
          return add(sums, both);
        })
      );
      sums.dispose();
      sums = keep(next);
      batch.images.dispose();
      batch.labels.dispose();
    }
    const [lossSum, correct] = await sums.toArray();
    return { accuracy: correct / loader.samples, loss: lossSum / loader.samples, count: loader.samples };
  } finally {
    sums.dispose();
    loader.dispose();
    model.train(wasTraining);
  }
}
