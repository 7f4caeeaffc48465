/**
 * A quick per-epoch check of a purifier on a fixed class-balanced test subset, with a fixed seed
 * (the same masks and noise every epoch, so the numbers are comparable): the L1 reconstruction
 * error of the final output in [−1, 1], and with a classifier the accuracy of the pipeline on
 * clean images and on FGSM examples of the classifier alone (protocol B, as the AToP notebooks
 * log it). Read back once at the end.
 */
import { fgsm } from "../attacks/fgsm.ts";
import type { ThreatModel } from "../attacks/types.ts";
import { noGrad } from "../autograd/tape.ts";
import { DataLoader, type GpuDataset } from "../data/loader.ts";
import { add, mulScalar } from "../ops/arithmetic.ts";
import { zeros } from "../ops/creation.ts";
import { l1Loss } from "../ops/loss.ts";
import { correctCount } from "../ops/metrics.ts";
import { manualSeed } from "../ops/random.ts";
import { concat } from "../ops/shape_ops.ts";
import type { Module } from "../nn/module.ts";
import { PurifiedClassifier, type Purifier, toSigned, toUnit } from "../purify/pipeline.ts";
import type { RandomTransform } from "../purify/transforms.ts";
import { keep, tidy } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";

export interface PurifierEvalOptions {
  /** Test images (class-balanced subset). */
  limit: number;
  batchSize: number;
  seed: number;
  /** With a classifier: the FGSM budget of the protocol-B check (null: skip). */
  fgsmThreat?: ThreatModel | null;
}

/** The purifier and its random transform, and the classifier to score it with (if any). */
export interface PurifierParts {
  transform: RandomTransform;
  generator: Purifier;
  classifier: Module | null;
}

export async function evaluatePurifier(
  parts: PurifierParts,
  test: GpuDataset,
  options: PurifierEvalOptions,
): Promise<Record<string, number>> {
  const loader = new DataLoader(test, { batchSize: options.batchSize, shuffle: false, limit: options.limit });
  const { classifier } = parts;
  const pipeline = classifier ? new PurifiedClassifier(parts.transform, parts.generator, classifier) : null;
  const threat = classifier ? options.fgsmThreat ?? null : null;
  const width = 1 + (classifier ? 1 : 0) + (threat ? 1 : 0);
  let sums: Tensor = keep(zeros([width]));
  manualSeed(options.seed);
  const wasTraining = classifier?.training ?? false;
  classifier?.eval();
  try {
    for (const batch of loader) {
      const next = tidy(() => {
        const { images, labels } = batch;
        const adversarial = threat && classifier
          ? fgsm((x) => classifier.forward(x), images, labels, threat)
          : null;
        return noGrad(() => {
          const draw = parts.transform.draw(images.shape);
          const purified = parts.transform.combine(
            parts.generator.forward(parts.transform.apply(images, draw)),
            draw,
          );
          const stats = [mulScalar(l1Loss(purified, toSigned(images)), labels.size).alias([1])];
          if (classifier) stats.push(correctCount(classifier.forward(toUnit(purified)), labels).alias([1]));
          if (adversarial && pipeline) {
            stats.push(correctCount(pipeline.logits(adversarial, draw), labels).alias([1]));
          }
          return add(sums, concat(stats, 0));
        });
      });
      sums.dispose();
      sums = keep(next);
      batch.images.dispose();
      batch.labels.dispose();
    }
    const values = Array.from(await sums.toArray()).map((v) => v / loader.samples);
    const out: Record<string, number> = { l1: values[0] };
    if (classifier) out.accuracy = values[1];
    if (threat) out.fgsmAccuracy = values[2];
    return out;
  } finally {
    sums.dispose();
    loader.dispose();
    classifier?.train(wasTraining);
  }
}
