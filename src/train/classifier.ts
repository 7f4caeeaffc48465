/**
 * The `classifier` stage: standard training of a classifier (or, with `adversarial`, the `at`
 * stage: adversarial training on FGSM/PGD examples of each batch), with evaluation every epoch,
 * checkpoints that make a killed run resume exactly (same weights, same schedule, same data
 * order), metrics kept on the GPU and read back every `logEvery` steps.
 */
import { gradScope } from "../autograd/backward.ts";
import { noGrad } from "../autograd/tape.ts";
import { DATASETS, loadDataset } from "../data/by_name.ts";
import { DataLoader, GpuDataset } from "../data/loader.ts";
import { type Checkpoint, loadCheckpoint, loadIntoTensors, saveCheckpoint } from "../io/checkpoint.ts";
import { markdownTable } from "../io/report.ts";
import type { Module } from "../nn/module.ts";
import { createModel } from "../models/zoo.ts";
import { add, mulScalar } from "../ops/arithmetic.ts";
import { fromArray, zeros } from "../ops/creation.ts";
import { crossEntropy } from "../ops/loss.ts";
import { correctCount } from "../ops/metrics.ts";
import { manualSeed } from "../ops/random.ts";
import { concat } from "../ops/shape_ops.ts";
import { Adam, AdamW, type Optimizer, SGD } from "../optim/mod.ts";
import { constantLR, cosineLR, type Schedule, stepLR } from "../optim/schedule.ts";
import { fgsm } from "../attacks/fgsm.ts";
import { pgd } from "../attacks/pgd.ts";
import { keep, tidy } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { type ClassifierConfig, defaultClassifierConfig } from "./classifier_options.ts";
import { UsageError } from "./options.ts";
import { evaluateClassifier } from "./evaluate.ts";
import { Progress } from "./progress.ts";
import type { RunFolder } from "./run_folder.ts";

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

/** Checkpoint layout: model.<name> for parameters and buffers, optim.<key> for optimizer state. */
async function saveState(
  path: string,
  model: Module,
  optimizer: Optimizer,
  metadata: Record<string, unknown>,
): Promise<void> {
  const tensors: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(model.stateDict())) tensors[`model.${name}`] = t;
  const state = optimizer.state();
  for (const [key, t] of Object.entries(state.tensors)) tensors[`optim.${key}`] = t;
  try {
    await saveCheckpoint(path, {
      tensors,
      metadata: { ...metadata, optimizer: { step: state.step, paramSteps: state.paramSteps } },
    });
  } finally {
    for (const t of Object.values(state.tensors)) t.dispose();
  }
}

/** The entries of a checkpoint under `prefix.`, with the prefix removed. */
export function checkpointSection(ckpt: Checkpoint, prefix: string): Checkpoint {
  const tensors = new Map(
    [...ckpt.tensors].filter(([k]) => k.startsWith(prefix + ".")).map((
      [k, v],
    ) => [k.slice(prefix.length + 1), v]),
  );
  return { ...ckpt, tensors };
}

/**
 * The config and weights of a classifier checkpoint. Ours carry their config in the metadata;
 * weights exported from PyTorch need the architecture named in `fallback`, and their
 * `num_batches_tracked` entries (BatchNorm bookkeeping we do not keep) are dropped.
 */
export async function readClassifierCheckpoint(
  path: string,
  fallback: { model?: string | null; dataset?: string | null; width?: number },
): Promise<{ config: ClassifierConfig; weights: Checkpoint }> {
  const ckpt = await loadCheckpoint(path);
  if (ckpt.metadata.config) {
    return { config: ckpt.metadata.config as ClassifierConfig, weights: checkpointSection(ckpt, "model") };
  }
  if (!fallback.model || !fallback.dataset) {
    throw new UsageError(`${path} has no training metadata: pass --model and --dataset`);
  }
  const config = defaultClassifierConfig({
    model: fallback.model,
    dataset: fallback.dataset,
    width: fallback.width ?? 1,
  });
  const tensors = new Map([...ckpt.tensors].filter(([k]) => !k.endsWith(".num_batches_tracked")));
  return { config, weights: { ...ckpt, tensors } };
}

function restoreOptimizer(ckpt: Checkpoint, optimizer: Optimizer): void {
  const meta = ckpt.metadata.optimizer as { step: number; paramSteps: Record<string, number> };
  const tensors: Record<string, Tensor> = {};
  for (const [key, t] of checkpointSection(ckpt, "optim").tensors) {
    tensors[key] = fromArray(t.data, t.shape, t.dtype);
  }
  try {
    optimizer.loadState({ step: meta.step, paramSteps: meta.paramSteps, tensors });
  } finally {
    for (const t of Object.values(tensors)) t.dispose();
  }
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

export interface TrainOptions {
  /** Continue from the run folder's checkpoint of this stage. */
  resume?: boolean;
  log?: (line: string) => void;
  /** Progress bar on a terminal (default: when stderr is a terminal). */
  tty?: boolean;
}

/** Trains a classifier in `run`; returns the history and the trained model (caller disposes). */
export async function trainClassifier(
  config: ClassifierConfig,
  run: RunFolder,
  options: TrainOptions = {},
): Promise<{ result: ClassifierResult; model: Module }> {
  const log = options.log ?? ((s: string) => console.error(s));
  const started = performance.now();
  await run.create();
  const [trainHost, testHost] = await Promise.all([
    loadDataset(config.dataset, "train", config.dataDir),
    loadDataset(config.dataset, "test", config.dataDir),
  ]);
  const train = GpuDataset.upload(trainHost), test = GpuDataset.upload(testHost);
  const model = buildClassifier(config, trainHost.shape, trainHost.classes.length);
  const augment = config.augment === "auto"
    ? DATASETS[config.dataset as keyof typeof DATASETS].augment
    : config.augment === "crop-flip"
    ? { crop: { padding: 4 }, flip: true }
    : {};
  const loader = new DataLoader(train, {
    batchSize: config.batchSize,
    shuffle: true,
    seed: config.seed,
    limit: config.limit ?? undefined,
    augment,
  });
  const optimizer = buildOptimizer(config, model);
  const totalSteps = config.epochs * loader.batchesPerEpoch;
  const schedule = buildSchedule(config, totalSteps, loader.batchesPerEpoch);
  const stage = stageName(config);
  const checkpointPath = run.checkpointPath(stage);
  let step = 0;
  let history: EpochRecord[] = [];
  let losses: [number, number][] = [];

  if (options.resume) {
    const ckpt = await loadCheckpoint(checkpointPath);
    const saved = ckpt.metadata.config as ClassifierConfig;
    const differs = Object.keys(config).filter((k) =>
      k !== "stopAfterSteps" &&
      JSON.stringify(saved?.[k as keyof ClassifierConfig]) !==
        JSON.stringify(config[k as keyof ClassifierConfig])
    );
    if (differs.length) {
      throw new Error(
        `cannot resume ${checkpointPath}: the config differs in ${
          differs.join(", ")
        }; resume with the saved config.json`,
      );
    }
    loadIntoTensors(checkpointSection(ckpt, "model"), model.stateDict());
    restoreOptimizer(ckpt, optimizer);
    step = ckpt.metadata.step as number;
    loader.seek(ckpt.metadata.loader as { epoch: number; batch: number });
    history = (ckpt.metadata.history as EpochRecord[]) ?? [];
    losses = (ckpt.metadata.losses as [number, number][]) ?? [];
    log(
      `resumed ${checkpointPath} at step ${step} (epoch ${
        loader.state().epoch + 1
      }, batch ${loader.state().batch})`,
    );
  }
  log(
    `${stage}: ${config.model} (${
      model.parameterCount().toLocaleString("en")
    } parameters) on ${config.dataset} ` +
      `(${loader.samples} train / ${
        config.testLimit ?? test.length
      } test images), ${config.epochs} epochs of ` +
      `${loader.batchesPerEpoch} steps, batch ${config.batchSize}, ${config.optimizer} lr ${config.lr} ${config.schedule}` +
      (config.adversarial === "none"
        ? ""
        : `, trained on ${config.adversarial} ${config.advNorm} eps ${config.advEps.toFixed(4)} examples`),
  );

  const checkpoint = () =>
    saveState(checkpointPath, model, optimizer, {
      stage,
      config,
      step,
      loader: loader.state(),
      history,
      losses,
      datasetShape: trainHost.shape,
      classes: trainHost.classes,
    });

  // Running sums (loss·B, correct) on the GPU, read back every logEvery steps.
  let sums: Tensor = keep(zeros([2]));
  let seen = 0;
  let lastRead = performance.now();
  let stopped = false;
  model.train();
  try {
    while (step < totalSteps && !stopped) {
      const epoch = loader.state().epoch;
      const epochStart = performance.now();
      const startBatch = loader.state().batch;
      const progress = new Progress(`epoch ${epoch + 1}/${config.epochs}`, loader.batchesPerEpoch, {
        tty: options.tty,
      });
      let epochSeen = 0, epochLoss = 0, epochCorrect = 0, shown: Record<string, number> = {};
      while (loader.state().epoch === epoch && step < totalSteps) {
        const batch = loader.next();
        optimizer.lr = schedule(step);
        optimizer.zeroGrad();
        const images = config.adversarial === "none"
          ? batch.images
          : adversarialBatch(model, batch.images, batch.labels, config, step);
        const stats = gradScope(() => {
          const logits = model.forward(images);
          const loss = crossEntropy(logits, batch.labels);
          loss.backward();
          return noGrad(() =>
            concat([
              mulScalar(loss, batch.labels.size).view([1]),
              correctCount(logits, batch.labels).view([1]),
            ], 0)
          );
        });
        optimizer.step();
        const next = tidy(() => add(sums, stats));
        sums.dispose();
        stats.dispose();
        sums = keep(next);
        seen += batch.labels.size;
        if (images !== batch.images) images.dispose();
        batch.images.dispose();
        batch.labels.dispose();
        step++;
        const batchIndex = loader.state().epoch === epoch ? loader.state().batch : loader.batchesPerEpoch;
        if (step % config.logEvery === 0 || batchIndex === loader.batchesPerEpoch) {
          const [lossSum, correct] = await sums.toArray(); // the only readback: every logEvery steps
          const now = performance.now();
          const imagesPerSecond = seen / ((now - lastRead) / 1000);
          shown = { loss: lossSum / seen, acc: correct / seen, "img/s": imagesPerSecond, lr: optimizer.lr };
          losses.push([step, lossSum / seen]);
          epochSeen += seen;
          epochLoss += lossSum;
          epochCorrect += correct;
          await run.log({ stage, type: "train", step, epoch: epoch + 1, ...shown });
          sums.dispose();
          sums = keep(zeros([2]));
          seen = 0;
          lastRead = now;
        }
        progress.update(batchIndex - startBatch, shown);
        if (step % config.checkpointEvery === 0) await checkpoint();
        if (config.stopAfterSteps !== null && step >= config.stopAfterSteps) {
          stopped = true;
          break;
        }
      }
      if (stopped) break;
      progress.done(shown);
      const seconds = (performance.now() - epochStart) / 1000;
      const evaluation = await evaluateClassifier(model, test, {
        batchSize: config.evalBatchSize,
        limit: config.testLimit,
      });
      const record: EpochRecord = {
        epoch: epoch + 1,
        trainLoss: epochLoss / epochSeen,
        trainAccuracy: epochCorrect / epochSeen,
        testLoss: evaluation.loss,
        testAccuracy: evaluation.accuracy,
        seconds,
        imagesPerSecond: epochSeen / seconds,
      };
      history.push(record);
      await run.log({ stage, type: "epoch", ...record });
      log(
        `epoch ${record.epoch}: train loss ${record.trainLoss.toFixed(4)} acc ${
          (100 * record.trainAccuracy).toFixed(2)
        }%  ` +
          `test loss ${record.testLoss.toFixed(4)} acc ${(100 * record.testAccuracy).toFixed(2)}%  ` +
          `${seconds.toFixed(1)} s, ${record.imagesPerSecond.toFixed(0)} img/s`,
      );
      lastRead = performance.now();
      await checkpoint();
    }
    if (stopped) {
      await checkpoint();
      log(`stopped after step ${step} (--stop-after-steps); resume with --resume`);
    }
  } finally {
    sums.dispose();
    loader.dispose();
    train.dispose();
    test.dispose();
    optimizer.zeroGrad();
    optimizer.disposeState();
  }
  const result: ClassifierResult = {
    completed: !stopped,
    step,
    history,
    losses,
    testAccuracy: history.at(-1)?.testAccuracy ?? null,
    wallSeconds: (performance.now() - started) / 1000,
  };
  return { result, model };
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
