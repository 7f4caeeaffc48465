/**
 * Runs the AToP study stage by stage in one run folder. Each stage writes its checkpoint as it
 * goes and, when it completes, `stages/<stage>.json` (its history and loss curve). Running the
 * study again on the same folder skips completed stages and resumes an interrupted one from its
 * checkpoint, so a killed `deno task train` loses at most `checkpointEvery` steps.
 *
 * Models pass between stages through their checkpoints: the classifier of `classifier`, the
 * generator of `pretrain` (the starting point of every atop mode) and of each `atop-<mode>`.
 */
import { checkDatasetFiles, type DatasetName, DATASETS, loadDataset } from "../data/by_name.ts";
import { loadCheckpoint, loadIntoTensors } from "../io/checkpoint.ts";
import { pathExists } from "../io/paths.ts";
import type { Module } from "../nn/module.ts";
import type { Purifier } from "../purify/pipeline.ts";
import { checkRtFits } from "../purify/transforms.ts";
import { atopStageName, fineTunePurifier } from "../train/atop.ts";
import { loadClassifier, readClassifierCheckpoint, stageName, trainClassifier } from "../train/classifier.ts";
import type { ClassifierConfig } from "../train/classifier_options.ts";
import { buildPurifier, pretrainPurifier } from "../train/pretrain.ts";
import type { RunFolder } from "../train/run_folder.ts";
import { UsageError } from "../train/options.ts";
import { checkpointSection, type StageResult } from "../train/stage_runner.ts";
import type { StudyConfig, StudyStage } from "./config.ts";

export interface StudyOptions {
  log?: (line: string) => void;
  tty?: boolean;
  /** Run only these stages (default all); later stages need the earlier ones' checkpoints. */
  stages?: StudyStage[];
  /** Stop every training stage after this many steps, checkpointed (resume tests). */
  stopAfterSteps?: number | null;
}

/** What a completed stage leaves in stages/<name>.json. */
export interface StageRecord {
  stage: string;
  result: StageResult;
  /** Extra facts (parameter counts, test accuracy). */
  facts: Record<string, unknown>;
}

export interface ModelShape {
  /** [C, H, W] of the dataset. */
  shape: [number, number, number];
  classes: string[];
}

/** The stage names of a study in order (atop expands to one stage per mode). */
export function studyStages(config: StudyConfig): string[] {
  return [
    "classifier",
    ...(config.at ? ["at"] : []),
    "pretrain",
    ...config.atopModes.map(atopStageName),
  ];
}

function stageFile(stage: string): string {
  return `stages/${stage}.json`;
}

export async function readStageRecord(run: RunFolder, stage: string): Promise<StageRecord | null> {
  return (await run.exists(stageFile(stage))) ? await run.readJson<StageRecord>(stageFile(stage)) : null;
}

async function writeStageRecord(run: RunFolder, record: StageRecord): Promise<void> {
  await Deno.mkdir(run.path("stages"), { recursive: true });
  await run.writeJson(stageFile(record.stage), record);
}

/** Path of the classifier the purifier stages stand in front of. */
export function classifierPath(config: StudyConfig, run: RunFolder): string {
  return config.classifierCheckpoint ?? run.checkpointPath("classifier");
}

/** The dataset's image shape and classes. */
export async function modelShape(config: StudyConfig): Promise<ModelShape> {
  const host = await loadDataset(config.dataset, "test", config.classifier.dataDir);
  return { shape: [...host.shape] as [number, number, number], classes: host.classes };
}

/** How to read a --classifier-checkpoint without our metadata: the study's classifier settings. */
function classifierFallback(config: StudyConfig) {
  const c = config.classifier;
  return { model: c.model, dataset: c.dataset, width: c.width, normalize: c.normalize ?? null };
}

/** The frozen classifier of the study (from its checkpoint). */
export async function studyClassifier(
  config: StudyConfig,
  run: RunFolder,
  shape: ModelShape,
): Promise<Module> {
  const { model } = await loadClassifier(
    classifierPath(config, run),
    shape.shape,
    shape.classes.length,
    classifierFallback(config),
  );
  model.eval();
  return model;
}

/** A purifier with the weights of a stage's checkpoint (`pretrain` or `atop-<mode>`). */
export async function studyPurifier(
  config: StudyConfig,
  run: RunFolder,
  stage: string,
  channels: number,
): Promise<Purifier> {
  const generator = buildPurifier(config.pretrain, channels);
  try {
    const ckpt = await loadCheckpoint(run.checkpointPath(stage));
    loadIntoTensors(checkpointSection(ckpt, "generator"), generator.stateDict());
  } catch (e) {
    generator.dispose();
    throw e;
  }
  return generator;
}

/**
 * The inputs the wanted stages read that no wanted stage makes and that are not there (an empty
 * list: nothing missing). An input counts as there when the stage that makes it finished (its
 * stage record): a checkpoint alone may be a killed stage's partial one, and a stage trained from
 * it would be recorded as done and never redone. A given --classifier-checkpoint is also read, so
 * that a bad one fails now instead of after the stages before its first use.
 */
export async function missingInputs(
  config: StudyConfig,
  run: RunFolder,
  stages: StudyStage[] | undefined,
  /** Called with the config of a --classifier-checkpoint without our metadata (imported weights). */
  onImported?: (config: ClassifierConfig) => void,
): Promise<string[]> {
  const wanted = (s: StudyStage) => !stages || stages.includes(s);
  const missing: string[] = [];
  const needsClassifier = (wanted("at") && config.at !== null && config.atInit === "classifier") ||
    wanted("atop") || wanted("evaluate");
  /** Stage `stage` (records and checkpoints named `name`) must have finished unless it runs now. */
  const require = async (stage: StudyStage, name: string, alternative = "") => {
    if (wanted(stage) || await readStageRecord(run, name)) return;
    const partial = await pathExists(run.checkpointPath(name));
    missing.push(
      `${run.checkpointPath(name)} (made by the ${name} stage${alternative}${
        partial ? ", which has not finished: the checkpoint there is a partial one" : ""
      })`,
    );
  };
  if (needsClassifier && config.classifierCheckpoint) {
    const { config: read, imported } = await readClassifierCheckpoint(
      config.classifierCheckpoint,
      classifierFallback(config),
    );
    if (imported) onImported?.(read);
  } else if (needsClassifier) {
    await require("classifier", "classifier", ", or pass --classifier-checkpoint");
  }
  if (wanted("atop") || wanted("evaluate")) await require("pretrain", "pretrain");
  if (wanted("evaluate")) {
    if (config.at) await require("at", "at");
    for (const mode of config.atopModes) await require("atop", atopStageName(mode));
  }
  return missing;
}

/**
 * Checks made before a study trains anything, so a mistake fails in seconds rather than when the
 * stage that meets it starts, maybe hours in: every stage's dataset can be loaded (CIFAR's files
 * are there, with their sizes) and the random transform's grid fits its images (--grid).
 */
export async function checkStudySetup(config: StudyConfig): Promise<void> {
  const stages = [config.classifier, ...(config.at ? [config.at] : []), config.pretrain, config.atop];
  const checked = new Set<string>();
  for (const { dataset, dataDir } of stages) {
    const key = JSON.stringify([dataset, dataDir]);
    if (!checked.has(key)) await checkDatasetFiles(dataset, dataDir);
    checked.add(key);
  }
  for (const { dataset, rt } of [config.pretrain, config.atop]) {
    const [, h, w] = DATASETS[dataset as DatasetName].shape;
    try {
      checkRtFits(`--grid (${rt.kind} on ${dataset})`, rt, h, w);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
}

/** Runs the training stages that are not complete yet; returns whether all of them completed. */
export async function runStudyTraining(
  config: StudyConfig,
  run: RunFolder,
  options: StudyOptions = {},
): Promise<boolean> {
  const log = options.log ?? ((s: string) => console.error(s));
  const wanted = (s: StudyStage) => !options.stages || options.stages.includes(s);
  const stop = <T extends { stopAfterSteps: number | null }>(c: T): T => ({
    ...c,
    stopAfterSteps: options.stopAfterSteps ?? null,
  });
  const runOptions = (stage: string) =>
    pathExists(run.checkpointPath(stage)).then((resume) => ({ resume, log, tty: options.tty }));
  await run.create();

  const classifierStage = async (stage: "classifier" | "at", c: ClassifierConfig) => {
    if (await readStageRecord(run, stage)) return true;
    const initFrom = stage === "at" && config.atInit === "classifier"
      ? classifierPath(config, run)
      : undefined;
    const { result, model } = await trainClassifier(stop(c), run, {
      ...(await runOptions(stageName(c))),
      initFrom,
    });
    const facts = { parameters: model.parameterCount(), testAccuracy: result.testAccuracy };
    model.dispose();
    if (!result.completed) return false;
    await writeStageRecord(run, {
      stage,
      result: {
        completed: true,
        step: result.step,
        history: result.history.map((h) => ({
          epoch: h.epoch,
          train: { loss: h.trainLoss, accuracy: h.trainAccuracy },
          eval: { loss: h.testLoss, accuracy: h.testAccuracy },
          seconds: h.seconds,
          imagesPerSecond: h.imagesPerSecond,
        })),
        metrics: ["loss"],
        curve: result.losses,
        wallSeconds: result.wallSeconds,
      },
      facts,
    });
    return true;
  };

  if (wanted("classifier")) {
    if (config.classifierCheckpoint) log(`classifier: using ${config.classifierCheckpoint}`);
    else if (!(await classifierStage("classifier", config.classifier))) return false;
  }
  if (wanted("at") && config.at && !(await classifierStage("at", config.at))) return false;

  if (wanted("pretrain") && !(await readStageRecord(run, "pretrain"))) {
    const { result, generator } = await pretrainPurifier(
      stop(config.pretrain),
      run,
      await runOptions("pretrain"),
    );
    const facts = { parameters: generator.parameterCount() };
    generator.dispose();
    if (!result.completed) return false;
    await writeStageRecord(run, { stage: "pretrain", result, facts });
  }

  if (wanted("atop")) {
    const shape = await modelShape(config);
    for (const mode of config.atopModes) {
      const stage = atopStageName(mode);
      if (await readStageRecord(run, stage)) continue;
      const classifier = await studyClassifier(config, run, shape);
      const generator = await studyPurifier(config, run, "pretrain", shape.shape[0]);
      try {
        const result = await fineTunePurifier(
          stop({ ...config.atop, mode }),
          generator,
          classifier,
          run,
          await runOptions(stage),
        );
        if (!result.completed) return false;
        await writeStageRecord(run, { stage, result, facts: { parameters: generator.parameterCount() } });
      } finally {
        generator.dispose();
        classifier.dispose();
      }
    }
  }
  return true;
}
