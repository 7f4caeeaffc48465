/**
 * The `classifier` stage: standard training of a classifier (or, with `adversarial`, the `at`
 * stage: adversarial training on FGSM/PGD examples of each batch), with evaluation every epoch,
 * checkpoints that make a killed run resume exactly (same weights, same schedule, same data
 * order), metrics kept on the GPU and read back every `logEvery` steps.
 */
import { gradScope } from "../autograd/backward.ts";
import { noGrad } from "../autograd/tape.ts";
import { type Checkpoint, loadCheckpoint, loadIntoTensors } from "../io/checkpoint.ts";
import { markdownTable } from "../io/report.ts";
import type { Module } from "../nn/module.ts";
import { createModel, type Normalization } from "../models/zoo.ts";
import { mulScalar } from "../ops/arithmetic.ts";
import { crossEntropy } from "../ops/loss.ts";
import { correctCount } from "../ops/metrics.ts";
import { manualSeed } from "../ops/random.ts";
import { concat } from "../ops/shape_ops.ts";
import { Adam, AdamW, type Optimizer, SGD } from "../optim/mod.ts";
import { constantLR, cosineLR, type Schedule, stepLR } from "../optim/schedule.ts";
import { fgsm } from "../attacks/fgsm.ts";
import { pgd } from "../attacks/pgd.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { type ClassifierConfig, defaultClassifierConfig } from "./classifier_options.ts";
import { UsageError } from "./options.ts";
import { evaluateClassifier } from "./evaluate.ts";
import type { RunFolder } from "./run_folder.ts";
import { openStageData } from "./stage_data.ts";
import { checkpointSection, type EpochSummary, type RunOptions, runStage } from "./stage_runner.ts";

export interface EpochRecord {
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  testLoss: number;
  testAccuracy: number;
  seconds: number;
  imagesPerSecond: number;
}

export interface ClassifierResult {
  completed: boolean;
  step: number;
  history: EpochRecord[];
  /** Training losses read back every `logEvery` steps (step, loss). */
  losses: [number, number][];
  testAccuracy: number | null;
  wallSeconds: number;
}

export function buildOptimizer(config: ClassifierConfig, model: Module): Optimizer {
  const params = model.namedParameters();
  switch (config.optimizer) {
    case "sgd":
      return new SGD({
        params,
        lr: config.lr,
        momentum: config.momentum,
        nesterov: config.nesterov && config.momentum > 0,
        weightDecay: config.weightDecay,
      });
    case "adam":
      return new Adam({
        params,
        lr: config.lr,
        betas: [config.beta1, config.beta2],
        weightDecay: config.weightDecay,
      });
    case "adamw":
      return new AdamW({
        params,
        lr: config.lr,
        betas: [config.beta1, config.beta2],
        weightDecay: config.weightDecay,
      });
  }
}

export function buildSchedule(config: ClassifierConfig, totalSteps: number, stepsPerEpoch: number): Schedule {
  switch (config.schedule) {
    case "cosine":
      return cosineLR({
        base: config.lr,
        total: Math.max(totalSteps, config.warmupSteps + 1),
        warmup: config.warmupSteps,
      });
    case "step":
      return stepLR({ base: config.lr, stepSize: config.stepEpochs * stepsPerEpoch, gamma: config.gamma });
    case "constant":
      return constantLR(config.lr);
  }
}

/** The normalisation of raw [0, 1] inputs (mean 0, std 1), as `--normalize none`. */
const RAW_INPUTS = { mean: [0], std: [1] };

/**
 * The config and weights of a classifier checkpoint. Ours carry their config in the metadata;
 * weights exported from PyTorch need the architecture named in `fallback` (and their input
 * normalisation: the dataset's statistics by default, raw inputs for wrn-28-10 as RobustBench's),
 * and tensors their forward never uses are dropped (see below).
 */

export async function readClassifierCheckpoint(
  path: string,
  fallback: {
    model?: string | null;
    dataset?: string | null;
    width?: number;
    /** The normalisation the weights were trained with (default: the dataset's statistics). */
    normalize?: Normalization | null;
  },
): Promise<{ config: ClassifierConfig; weights: Checkpoint; imported: boolean }> {
  const ckpt = await loadCheckpoint(path);
  if (ckpt.metadata.config) {
    // A stage checkpoint of another kind (a purifier's: generator.*) holds no classifier.
    if (![...ckpt.tensors.keys()].some((k) => k.startsWith("model."))) {
      throw new UsageError(
        `${path} is a '${ckpt.metadata.stage ?? "non-classifier"}' checkpoint with no classifier in it ` +
          `(tensors ${[...ckpt.tensors.keys()].slice(0, 2).join(", ")}, ...): give a classifier's, ` +
          `e.g. <run>/checkpoints/classifier.safetensors or at.safetensors`,
      );
    }
    // A normalisation that restates the one it was trained with is fine (a study trained with
    // --classifier-normalize reads its own classifier back with it); another contradicts it.
    const trained = (ckpt.metadata.config as ClassifierConfig).normalize ?? null;
    if (fallback.normalize && JSON.stringify(fallback.normalize) !== JSON.stringify(trained)) {
      throw new UsageError(
        `${path} carries its training config (and normalisation): an input normalisation ` +
          `(--normalize, --classifier-normalize) is for weights without it`,
      );
    }
    return {
      config: ckpt.metadata.config as ClassifierConfig,
      weights: checkpointSection(ckpt, "model"),
      imported: false,
    };
  }
  if (!fallback.model || !fallback.dataset) {
    throw new UsageError(`${path} has no training metadata: pass --model and --dataset`);
  }
  // RobustBench's WideResNets take raw [0, 1] inputs: that is their default, not the dataset's.
  const normalize = fallback.normalize ?? (fallback.model === "wrn-28-10" ? RAW_INPUTS : null);
  const config = defaultClassifierConfig({
    model: fallback.model,
    dataset: fallback.dataset,
    width: fallback.width ?? 1,
    ...(normalize ? { normalize } : {}),
  });
  // Dropped: BatchNorm's step counters, and the `sub_block1` of RobustBench WideResNets built
  // with sub_block1=True (Carmon2019Unlabeled, TRADES...), parameters their forward never uses.
  const unused = (k: string) =>
    k.endsWith(".num_batches_tracked") || (fallback.model === "wrn-28-10" && k.startsWith("sub_block1."));
  const tensors = new Map([...ckpt.tensors].filter(([k]) => !unused(k)));
  return { config, weights: { ...ckpt, tensors }, imported: true };
}

/** Builds the model of a classifier config (seeded, so the initial weights are reproducible). */
export function buildClassifier(
  config: ClassifierConfig,
  shape: readonly number[],
  numClasses: number,
): Module {
  manualSeed(config.seed);
  return createModel(config.model, {
    inChannels: shape[0],
    numClasses,
    dataset: config.dataset,
    widthMultiplier: config.width,
    normalize: config.normalize,
  });
}

/** Checkpoint and log name of a config's stage: `at` for adversarial training. */
export function stageName(config: ClassifierConfig): string {
  return config.adversarial === "none" ? "classifier" : "at";
}

/**
 * The adversarial examples a step trains on. The attack runs with the model in eval mode
 * (running batchnorm statistics, which it must not update) and a seed derived from the step,
 * so resumed runs draw the same random starts.
 */
function adversarialBatch(
  model: Module,
  x: Tensor,
  y: Tensor,
  config: ClassifierConfig,
  step: number,
): Tensor {
  const f = (t: Tensor) => model.forward(t);
  const threat = { norm: config.advNorm, eps: config.advEps };
  model.eval();
  try {
    return config.adversarial === "fgsm" ? fgsm(f, x, y, threat) : pgd(f, x, y, threat, {
      steps: config.advSteps,
      stepSize: config.advStepSize ?? undefined,
      seed: config.seed * 1_000_003 + step,
    });
  } finally {
    model.train();
  }
}

/** Trains a classifier in `run`; returns the history and the trained model (caller disposes). */
export async function trainClassifier(
  config: ClassifierConfig,
  run: RunFolder,
  options: RunOptions & {
    /** Start from this checkpoint's weights (e.g. adversarial fine-tuning of a trained classifier). */
    initFrom?: string;
  } = {},
): Promise<{ result: ClassifierResult; model: Module }> {
  const data = await openStageData(config);
  const { loader, test } = data;
  const model = buildClassifier(config, data.shape, data.classes.length);
  if (options.initFrom && !options.resume) {
    const init = await readClassifierCheckpoint(options.initFrom, config);
    loadIntoTensors(init.weights, model.stateDict());
  }
  const optimizer = buildOptimizer(config, model);
  const schedule = buildSchedule(config, config.epochs * loader.batchesPerEpoch, loader.batchesPerEpoch);
  const stage = stageName(config);
  model.train();
  try {
    const result = await runStage(
      {
        stage,
        config,
        loader,
        modules: { model },
        optimizers: { optim: optimizer },
        metrics: ["loss", "accuracy"],
        metadata: { datasetShape: data.shape, classes: data.classes },
        describe:
          `${stage}: ${config.model} (${model.parameterCount().toLocaleString("en")} parameters) on ` +
          `${config.dataset} (${loader.samples} train / ${config.testLimit ?? test.length} test images), ` +
          `${config.epochs} epochs of ${loader.batchesPerEpoch} steps, batch ${config.batchSize}, ` +
          `${config.optimizer} lr ${config.lr} ${config.schedule}` +
          (config.adversarial === "none"
            ? ""
            : `, trained on ${config.adversarial} ${config.advNorm} eps ${
              config.advEps.toFixed(4)
            } examples`),
        step(batch, step) {
          optimizer.lr = schedule(step);
          optimizer.zeroGrad();
          const images = config.adversarial === "none"
            ? batch.images
            : adversarialBatch(model, batch.images, batch.labels, config, step);
          try {
            const stats = gradScope(() => {
              const logits = model.forward(images);
              const loss = crossEntropy(logits, batch.labels);
              loss.backward();
              return noGrad(() =>
                concat([
                  mulScalar(loss, batch.labels.size).alias([1]),
                  correctCount(logits, batch.labels).alias([1]),
                ], 0)
              );
            });
            optimizer.step();
            return stats;
          } finally {
            if (images !== batch.images) images.dispose();
          }
        },
        async evaluate() {
          const e = await evaluateClassifier(model, test, {
            batchSize: config.evalBatchSize,
            limit: config.testLimit,
          });
          return { loss: e.loss, accuracy: e.accuracy };
        },
      },
      run,
      options,
    );
    const history = result.history.map(epochRecord);
    return {
      result: {
        completed: result.completed,
        step: result.step,
        history,
        losses: result.curve.map(([step, loss]) => [step, loss]),
        testAccuracy: history.at(-1)?.testAccuracy ?? null,
        wallSeconds: result.wallSeconds,
      },
      model,
    };
  } catch (e) {
    model.dispose();
    throw e;
  } finally {
    data.dispose();
  }
}

function epochRecord(e: EpochSummary): EpochRecord {
  return {
    epoch: e.epoch,
    trainLoss: e.train.loss,
    trainAccuracy: e.train.accuracy,
    testLoss: e.eval.loss,
    testAccuracy: e.eval.accuracy,
    seconds: e.seconds,
    imagesPerSecond: e.imagesPerSecond,
  };
}

/** Markdown table of a classifier's epochs. */
export function historyTable(history: EpochRecord[]): string {
  return markdownTable(
    ["epoch", "train loss", "train acc %", "test loss", "test acc %", "seconds", "img/s"],
    history.map((h) => [
      h.epoch,
      h.trainLoss.toFixed(4),
      (100 * h.trainAccuracy).toFixed(2),
      h.testLoss.toFixed(4),
      (100 * h.testAccuracy).toFixed(2),
      h.seconds.toFixed(1),
      h.imagesPerSecond.toFixed(0),
    ]),
  );
}

/**
 * A classifier from a checkpoint, ready to use: architecture from its metadata (or `fallback`
 * for PyTorch-named weights), weights and running statistics loaded. The caller disposes it.
 */
export async function loadClassifier(
  path: string,
  shape: readonly number[],
  numClasses: number,
  fallback: Parameters<typeof readClassifierCheckpoint>[1] = {},
): Promise<{ config: ClassifierConfig; model: Module }> {
  const { config, weights } = await readClassifierCheckpoint(path, fallback);
  const model = buildClassifier(config, shape, numClasses);
  try {
    loadIntoTensors(weights, model.stateDict());
  } catch (e) {
    model.dispose();
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  return { config, model };
}
