/**
 * The training loop every stage shares (classifier, at, pretrain, atop):
 * - epochs of loader batches; a `step` function that does the work of one batch and returns
 *   its metric sums as a GPU tensor — nothing is read back inside a step;
 * - the sums accumulate on the GPU and are read every `logEvery` steps (progress bar, log.jsonl,
 *   loss curve) and at each epoch end;
 * - an evaluation after every epoch (optional);
 * - checkpoints every `checkpointEvery` steps and at each epoch end, written atomically, holding
 *   modules, optimizer state, data position, step, history and config, so that a killed run
 *   resumes exactly: the default random generator is reseeded from (seed, step) before every
 *   step, so random transforms, attack starts and noise do not depend on what ran before, and the
 *   metric sums not yet logged travel in the checkpoint, so a resumed epoch's record and loss
 *   curve are those of an uninterrupted run.
 */
import type { Batch, DataLoader } from "../data/loader.ts";
import { type Checkpoint, loadCheckpoint, loadIntoTensors, saveCheckpoint } from "../io/checkpoint.ts";
import { pathExists } from "../io/paths.ts";
import type { Module } from "../nn/module.ts";
import { add } from "../ops/arithmetic.ts";
import { fromArray, zeros } from "../ops/creation.ts";
import { manualSeed } from "../ops/random.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { keep, tidy } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { mixSeed } from "../eval/protocol.ts";
import { Progress } from "./progress.ts";
import type { RunFolder } from "./run_folder.ts";

/** Settings every stage has (part of each stage's config). */
export interface LoopSettings {
  epochs: number;
  seed: number;
  /** Steps between metric readbacks. */
  logEvery: number;
  /** Steps between checkpoints (also at every epoch end). */
  checkpointEvery: number;
  /** Stop after this many steps, checkpointed, as if killed (resume tests). */
  stopAfterSteps: number | null;
}

export interface StageDefinition {
  /** Name in logs and of the checkpoint file. */
  stage: string;
  /** Saved in the checkpoint; resuming with a different config is refused. */
  config: LoopSettings & object;
  loader: DataLoader;
  /** Saved under `<prefix>.<tensor name>`, e.g. { model: classifier } or { generator: g }. */
  modules: Record<string, Module>;
  /**
   * Optimizer state saved under `<prefix>.<key>`, e.g. { optim: sgd } or { generator_optim: adam };
   * no prefix may be another's prefix, nor a module's.
   */
  optimizers: Record<string, Optimizer>;
  /** Names of the sums a step returns (first = the loss curve), e.g. ["loss", "accuracy"]. */
  metrics: string[];
  /**
   * One training step on `batch` (owned by the runner, disposed after), run inside tidy():
   * every tensor it creates but does not return is freed. Returns a tensor [metrics.length] of
   * sums over the batch's images; the runner divides by the image count.
   */
  step(batch: Batch, step: number, epoch: number): Tensor;
  /** Runs after every epoch (e.g. test accuracy); numbers go to the epoch record. */
  evaluate?(epoch: number): Promise<Record<string, number>>;
  /** Extra metadata for the checkpoint (dataset shape, classes...). */
  metadata?: Record<string, unknown>;
  /** One-line description printed at the start. */
  describe?: string;
}

export interface EpochSummary {
  epoch: number;
  /** Means over the epoch's images of the step metrics. */
  train: Record<string, number>;
  /** What `evaluate` returned. */
  eval: Record<string, number>;
  seconds: number;
  imagesPerSecond: number;
}

export interface StageResult {
  completed: boolean;
  step: number;
  /** The metric names of `curve` and of the epochs' `train` records. */
  metrics: string[];
  history: EpochSummary[];
  /** Per readback: [step, mean of each metric since the previous readback]. */
  curve: [number, ...number[]][];
  wallSeconds: number;
}

export interface RunOptions {
  /** Continue from the run folder's checkpoint of this stage. */
  resume?: boolean;
  log?: (line: string) => void;
  /** Progress bar on a terminal (default: when stderr is a terminal). */
  tty?: boolean;
}

/** Keys whose values differ between two configs (resume check), ignoring `stopAfterSteps`. */
export function configDifferences(saved: object | undefined, current: object): string[] {
  const a = (saved ?? {}) as Record<string, unknown>, b = current as Record<string, unknown>;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) => k !== "stopAfterSteps" && JSON.stringify(a[k]) !== JSON.stringify(b[k]));
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

interface OptimizerMetadata {
  step: number;
  paramSteps: Record<string, number>;
}

async function saveStage(
  path: string,
  def: StageDefinition,
  metadata: Record<string, unknown>,
): Promise<void> {
  const tensors: Record<string, Tensor> = {};
  const owned: Tensor[] = [];
  const optimizerMeta: Record<string, OptimizerMetadata> = {};
  for (const [prefix, module] of Object.entries(def.modules)) {
    for (const [name, t] of Object.entries(module.stateDict())) tensors[`${prefix}.${name}`] = t;
  }
  for (const [prefix, optimizer] of Object.entries(def.optimizers)) {
    const state = optimizer.state();
    optimizerMeta[prefix] = { step: state.step, paramSteps: state.paramSteps };
    for (const [key, t] of Object.entries(state.tensors)) {
      tensors[`${prefix}.${key}`] = t;
      owned.push(t);
    }
  }
  try {
    await saveCheckpoint(path, { tensors, metadata: { ...metadata, optimizers: optimizerMeta } });
  } finally {
    for (const t of owned) t.dispose();
  }
}

function restoreStage(ckpt: Checkpoint, def: StageDefinition): void {
  for (const [prefix, module] of Object.entries(def.modules)) {
    loadIntoTensors(checkpointSection(ckpt, prefix), module.stateDict());
  }
  const meta = ckpt.metadata.optimizers as Record<string, OptimizerMetadata>;
  for (const [prefix, optimizer] of Object.entries(def.optimizers)) {
    const tensors: Record<string, Tensor> = {};
    for (const [key, t] of checkpointSection(ckpt, prefix).tensors) {
      tensors[key] = fromArray(t.data, t.shape, t.dtype);
    }
    try {
      optimizer.loadState({ step: meta[prefix].step, paramSteps: meta[prefix].paramSteps, tensors });
    } finally {
      for (const t of Object.values(tensors)) t.dispose();
    }
  }
}

function formatMetric(name: string, value: number): string {
  return name === "accuracy" || name.endsWith("Accuracy") ? `${(100 * value).toFixed(2)}%` : value.toFixed(4);
}

/**
 * The metric sums of the loop at a checkpoint, so a resumed run reports what an uninterrupted
 * one would: the sums since the last readback, and those of the epoch so far (with its time).
 */
interface RunningSums {
  sums: number[];
  seen: number;
  epochSums: number[];
  epochSeen: number;
  epochSeconds: number;
  /** Seconds since the last readback (the images/s of the next one). */
  readSeconds: number;
}

/** Runs (or resumes) a stage to its end, or to `stopAfterSteps`. */
export async function runStage(
  def: StageDefinition,
  run: RunFolder,
  options: RunOptions = {},
): Promise<StageResult> {
  const log = options.log ?? ((s: string) => console.error(s));
  const started = performance.now();
  const { config, loader, stage } = def;
  const totalSteps = config.epochs * loader.batchesPerEpoch;
  const checkpointPath = run.checkpointPath(stage);
  await run.create();
  let step = 0;
  let history: EpochSummary[] = [];
  let curve: [number, ...number[]][] = [];
  let resumed: RunningSums | undefined;
  // Wall time of the processes before a resume, up to their last checkpoint.
  let earlierSeconds = 0;

  if (options.resume) {
    if (!(await pathExists(checkpointPath))) {
      throw new Error(
        `cannot resume: no checkpoint at ${checkpointPath}; check the run folder (--out), or start ` +
          "training from scratch by running without --resume",
      );
    }
    const ckpt = await loadCheckpoint(checkpointPath);
    const differs = configDifferences(ckpt.metadata.config as object | undefined, config);
    if (differs.length) {
      throw new Error(
        `cannot resume ${checkpointPath}: the config differs in ${differs.join(", ")}; ` +
          "resume with the saved config.json",
      );
    }
    restoreStage(ckpt, def);
    step = ckpt.metadata.step as number;
    loader.seek(ckpt.metadata.loader as { epoch: number; batch: number });
    history = (ckpt.metadata.history as EpochSummary[]) ?? [];
    curve = (ckpt.metadata.curve as [number, ...number[]][]) ?? [];
    resumed = ckpt.metadata.running as RunningSums | undefined;
    earlierSeconds = (ckpt.metadata.wallSeconds as number | undefined) ?? 0;
    log(
      `resumed ${checkpointPath} at step ${step} (epoch ${
        loader.state().epoch + 1
      }, batch ${loader.state().batch})`,
    );
    // Steps past the checkpoint that a killed run already logged are logged again: this line
    // tells a reader of log.jsonl that this stage's entries after `step` before it are superseded.
    await run.log({ stage, type: "resume", step });
  }
  if (def.describe) log(def.describe);

  const width = def.metrics.length;
  // Running sums of the step metrics on the GPU, read back every logEvery steps.
  let sums: Tensor = keep(resumed ? fromArray(resumed.sums, [width]) : zeros([width]));
  let seen = resumed?.seen ?? 0;
  let lastRead = performance.now() - 1000 * (resumed?.readSeconds ?? 0);
  // The epoch's sums of what was read back, and its start (earlier when resumed within it).
  let epochSums: number[] = [];
  let epochSeen = 0;
  let epochStart = 0;

  const checkpoint = async () => {
    const now = performance.now();
    const running: RunningSums = {
      sums: Array.from(await sums.toArray()),
      seen,
      epochSums,
      epochSeen,
      epochSeconds: (now - epochStart) / 1000,
      readSeconds: (now - lastRead) / 1000,
    };
    await saveStage(checkpointPath, def, {
      ...def.metadata,
      stage,
      config,
      step,
      loader: loader.state(),
      history,
      curve,
      running,
      wallSeconds: earlierSeconds + (now - started) / 1000,
    });
  };

  let stopped = false;
  const stopRequested = () => config.stopAfterSteps !== null && step >= config.stopAfterSteps;
  try {
    while (step < totalSteps && !stopped) {
      const epoch = loader.state().epoch;
      const startBatch = loader.state().batch;
      // Within an epoch (a resume), its sums so far come from the checkpoint.
      const within = startBatch > 0 && resumed !== undefined;
      epochSums = within ? [...resumed!.epochSums] : new Array<number>(width).fill(0);
      epochSeen = within ? resumed!.epochSeen : 0;
      epochStart = performance.now() - (within ? 1000 * resumed!.epochSeconds : 0);
      resumed = undefined;
      const progress = new Progress(`${stage} ${epoch + 1}/${config.epochs}`, loader.batchesPerEpoch, {
        tty: options.tty,
        start: startBatch,
      });
      let shown: Record<string, number> = {};
      while (loader.state().epoch === epoch && step < totalSteps) {
        const batch = loader.next();
        manualSeed(mixSeed(config.seed, step));
        let stats: Tensor;
        try {
          stats = tidy(() => def.step(batch, step, epoch)); // frees the step's intermediates
        } finally {
          batch.images.dispose();
          batch.labels.dispose();
        }
        const next = tidy(() => add(sums, stats));
        sums.dispose();
        stats.dispose();
        sums = keep(next);
        seen += batch.labels.size;
        step++;
        const batchIndex = loader.state().epoch === epoch ? loader.state().batch : loader.batchesPerEpoch;
        if (step % config.logEvery === 0 || batchIndex === loader.batchesPerEpoch) {
          const values = Array.from(await sums.toArray()); // the only readback of the loop
          const now = performance.now();
          const means = values.map((v) => v / seen);
          shown = Object.fromEntries(def.metrics.map((m, i) => [m, means[i]]));
          shown["img/s"] = seen / ((now - lastRead) / 1000);
          curve.push([step, ...means]);
          values.forEach((v, i) => epochSums[i] += v);
          epochSeen += seen;
          await run.log({ stage, type: "train", step, epoch: epoch + 1, ...shown });
          sums.dispose();
          sums = keep(zeros([width]));
          seen = 0;
          lastRead = now;
        }
        progress.update(batchIndex, shown);
        // An epoch's last batch is checkpointed after its evaluation and record (below): saved
        // here, a kill during the evaluation would resume past an epoch never evaluated.
        if (step % config.checkpointEvery === 0 && batchIndex !== loader.batchesPerEpoch) await checkpoint();
        // At an epoch's last batch, stop only after the epoch's evaluation and record (below).
        if (stopRequested() && batchIndex !== loader.batchesPerEpoch) {
          stopped = true;
          break;
        }
      }
      if (stopped) break;
      progress.done(shown);
      const seconds = (performance.now() - epochStart) / 1000;
      const evaluation = def.evaluate ? await def.evaluate(epoch) : {};
      const record: EpochSummary = {
        epoch: epoch + 1,
        train: Object.fromEntries(def.metrics.map((m, i) => [m, epochSums[i] / epochSeen])),
        eval: evaluation,
        seconds,
        imagesPerSecond: epochSeen / seconds,
      };
      history.push(record);
      // With its step: a resumed run's "resume" line supersedes entries after its step.
      await run.log({ stage, type: "epoch", step, ...record });
      const train = Object.entries(record.train).map(([k, v]) => `${k} ${formatMetric(k, v)}`).join(" ");
      const tested = Object.entries(record.eval).map(([k, v]) => `${k} ${formatMetric(k, v)}`).join(" ");
      log(
        `${stage} epoch ${record.epoch}: train ${train}${tested ? `  eval ${tested}` : ""}  ` +
          `${seconds.toFixed(1)} s, ${record.imagesPerSecond.toFixed(0)} img/s`,
      );
      lastRead = performance.now();
      await checkpoint();
      if (stopRequested() && step < totalSteps) stopped = true;
    }
    if (stopped) {
      await checkpoint();
      log(`${stage}: stopped after step ${step} (--stop-after-steps); resume with --resume`);
    }
  } finally {
    sums.dispose();
    for (const optimizer of Object.values(def.optimizers)) {
      optimizer.zeroGrad();
      optimizer.disposeState();
    }
  }
  return {
    completed: !stopped,
    step,
    metrics: def.metrics,
    history,
    curve,
    wallSeconds: earlierSeconds + (performance.now() - started) / 1000,
  };
}
