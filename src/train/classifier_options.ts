/** Options of the `classifier` stage (standard training of a classifier). */
import { DATASETS } from "../data/by_name.ts";
import { MODELS, type Normalization } from "../models/zoo.ts";
import type { OptionTable, OptionValues } from "./options.ts";

export const CLASSIFIER_OPTIONS = {
  dataset: { type: "string", default: "fashion-mnist", choices: Object.keys(DATASETS), help: "dataset" },
  dataDir: { type: "string", default: "data", help: "folder holding CIFAR binary files" },
  model: {
    type: "string",
    default: "resnet8",
    choices: Object.keys(MODELS),
    help: "classifier architecture",
  },
  width: { type: "integer", default: 1, min: 1, help: "width multiplier of the small models" },
  epochs: { type: "integer", default: 4, min: 1, help: "training epochs" },
  batchSize: { type: "integer", default: 128, min: 1, help: "training batch size" },
  optimizer: { type: "string", default: "sgd", choices: ["sgd", "adam", "adamw"], help: "optimizer" },
  lr: { type: "number", default: 0.1, min: 0, help: "peak learning rate" },
  momentum: { type: "number", default: 0.9, min: 0, help: "SGD momentum" },
  nesterov: { type: "boolean", default: true, help: "Nesterov momentum (SGD)" },
  weightDecay: { type: "number", default: 5e-4, min: 0, help: "weight decay" },
  beta1: { type: "number", default: 0.9, min: 0, help: "Adam beta1" },
  beta2: { type: "number", default: 0.999, min: 0, help: "Adam beta2" },
  schedule: {
    type: "string",
    default: "cosine",
    choices: ["cosine", "step", "constant"],
    help: "learning-rate schedule (per step)",
  },
  warmupSteps: { type: "integer", default: 0, min: 0, help: "linear warm-up steps (cosine)" },
  stepEpochs: { type: "integer", default: 30, min: 1, help: "epochs between decays (step schedule)" },
  gamma: { type: "number", default: 0.1, min: 0, help: "decay factor (step schedule)" },
  augment: {
    type: "string",
    default: "auto",
    choices: ["auto", "none", "crop-flip"],
    help: "train-time augmentation (auto: crop+flip for CIFAR, none otherwise)",
  },
  limit: {
    type: "integer",
    default: null,
    min: 1,
    help: "train on a class-balanced subset of this many images",
  },
  testLimit: {
    type: "integer",
    default: null,
    min: 1,
    help: "evaluate on a class-balanced subset of this many test images",
  },
  evalBatchSize: { type: "integer", default: 500, min: 1, help: "evaluation batch size" },
  adversarial: {
    type: "string",
    default: "none",
    choices: ["none", "fgsm", "pgd"],
    help: "adversarial training: train on FGSM or PGD examples of each batch (the `at` baseline)",
  },
  advNorm: {
    type: "string",
    default: "linf",
    choices: ["linf", "l2"],
    help: "adversarial training threat model",
  },
  advEps: { type: "number", default: 0.1, min: 0, help: "adversarial training budget (e.g. 8/255)" },
  advSteps: { type: "integer", default: 7, min: 1, help: "PGD steps of adversarial training" },
  advStepSize: {
    type: "number",
    default: null,
    min: 0,
    help: "PGD step size (default max(eps/4, 2.5·eps/steps))",
  },
  seed: { type: "integer", default: 0, min: 0, help: "seed of weight init, data order and augmentation" },
  logEvery: {
    type: "integer",
    default: 50,
    min: 1,
    help: "steps between metric readbacks (progress and logs)",
  },
  checkpointEvery: {
    type: "integer",
    default: 200,
    min: 1,
    help: "steps between checkpoints (also at every epoch end)",
  },
  stopAfterSteps: {
    type: "integer",
    default: null,
    min: 1,
    help:
      "stop when the stage reaches this step (counted from its start, across resumes), checkpointed, as if killed (resume tests)",
  },
} as const satisfies OptionTable;

export type ClassifierConfig = {
  dataset: string;
  dataDir: string;
  model: string;
  width: number;
  /** The input normalisation of imported weights, if not the dataset's (absent: the dataset's). */
  normalize?: Normalization;
  epochs: number;
  batchSize: number;
  optimizer: "sgd" | "adam" | "adamw";
  lr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  beta1: number;
  beta2: number;
  schedule: "cosine" | "step" | "constant";
  warmupSteps: number;
  stepEpochs: number;
  gamma: number;
  augment: "auto" | "none" | "crop-flip";
  adversarial: "none" | "fgsm" | "pgd";
  advNorm: "linf" | "l2";
  advEps: number;
  advSteps: number;
  advStepSize: number | null;
  limit: number | null;
  testLimit: number | null;
  evalBatchSize: number;
  seed: number;
  logEvery: number;
  checkpointEvery: number;
  stopAfterSteps: number | null;
};

export function classifierConfig(values: OptionValues): ClassifierConfig {
  const config = {} as Record<string, unknown>;
  for (const key of Object.keys(CLASSIFIER_OPTIONS)) config[key] = values[key];
  return config as ClassifierConfig;
}

export function defaultClassifierConfig(overrides: Partial<ClassifierConfig> = {}): ClassifierConfig {
  const values: OptionValues = {};
  for (const [k, spec] of Object.entries(CLASSIFIER_OPTIONS)) values[k] = spec.default;
  return { ...classifierConfig(values), ...overrides };
}
