/**
 * Command-line options of the study (`deno task train`): a profile, then overrides of its most
 * used settings. Every override defaults to null = "the profile's value"; the whole resolved
 * config is saved in the run folder's config.json (and can be edited there before a run).
 */
import { DATASETS } from "../data/by_name.ts";
import { MODELS, parseNormalization } from "../models/zoo.ts";
import { ATOP_MODES, type AtopMode } from "../train/atop.ts";
import { type OptionTable, type OptionValues, UsageError } from "../train/options.ts";
import { buildProfile, profileNames, STAGES, type StudyConfig, type StudyStage } from "./config.ts";

export const STUDY_OPTIONS = {
  profile: {
    type: "string",
    default: "default",
    choices: profileNames(),
    help: "settings of the whole study: default (CPU, ~20-30 min), tiny, full (GPU), cifar10-paper",
  },
  stages: {
    type: "string",
    default: "all",
    help: `comma-separated stages to run (${STAGES.join(",")}); later stages need the earlier ones`,
  },
  out: { type: "string", default: null, help: "run folder (default: runs/atop-<date>)" },
  resume: { type: "boolean", default: false, help: "continue the run in --out (completed stages are kept)" },
  seed: { type: "integer", default: 0, min: 0, help: "seed of the whole study (each stage derives its own)" },
  dataset: { type: "string", default: null, choices: Object.keys(DATASETS), help: "dataset of every stage" },
  dataDir: { type: "string", default: null, help: "folder holding CIFAR binary files" },
  model: { type: "string", default: null, choices: Object.keys(MODELS), help: "classifier architecture" },
  classifierCheckpoint: {
    type: "string",
    default: null,
    help: "use this classifier checkpoint instead of training one (PyTorch-named weights need --model)",
  },
  classifierNormalize: {
    type: "string",
    default: null,
    help: "input normalisation of the classifier and the AT baseline: none (raw [0,1], e.g. RobustBench " +
      "WRNs), a dataset name, or <mean,...>/<std,...>; for --classifier-checkpoint weights without our " +
      "metadata, the one they were trained with (default: the dataset's; wrn-28-10 imports: none)",
  },
  classifierEpochs: { type: "integer", default: null, min: 1, help: "classifier training epochs" },
  classifierLimit: { type: "integer", default: null, min: 1, help: "classifier training images" },
  classifierWidth: {
    type: "integer",
    default: null,
    min: 1,
    help: "width multiplier of the classifier (and the AT baseline): resnet8/20, small-cnn",
  },
  atEpochs: { type: "integer", default: null, min: 0, help: "AT baseline epochs (0: no AT row)" },
  atSteps: { type: "integer", default: null, min: 1, help: "PGD steps of the AT baseline" },
  atInit: {
    type: "string",
    default: null,
    choices: ["classifier", "scratch"],
    help: "AT starts from the trained classifier (adversarial fine-tuning) or from scratch",
  },
  generator: { type: "string", default: null, choices: ["coarse", "deepfill"], help: "purifier network" },
  generatorWidth: { type: "integer", default: null, min: 1, help: "purifier base width" },
  rt: { type: "string", default: null, choices: ["rt1", "rt2", "rt3"], help: "random transform" },
  sigma: { type: "number", default: null, min: 0, help: "RT2/RT3 noise standard deviation" },
  grid: { type: "integer", default: null, min: 1, help: "blocks per side of the mask grid" },
  missing: { type: "number", default: null, min: 0, max: 1, help: "fraction of missing blocks (RT1/RT2)" },
  fixedRandomness: {
    type: "boolean",
    default: false,
    help: "freeze the transform's randomness (same mask and noise every call: determinism checks)",
  },
  pretrainEpochs: { type: "integer", default: null, min: 1, help: "purifier pre-training epochs" },
  pretrainLimit: { type: "integer", default: null, min: 1, help: "purifier pre-training images" },
  gan: { type: "boolean", default: null, help: "hinge GAN term in pre-training (profile default)" },
  atopModes: {
    type: "string",
    default: null,
    help: `comma-separated AToP modes (${ATOP_MODES.join(",")})`,
  },
  atopEpochs: { type: "integer", default: null, min: 1, help: "AToP fine-tuning epochs" },
  atopLimit: { type: "integer", default: null, min: 1, help: "AToP fine-tuning images per epoch" },
  lambda: { type: "number", default: null, min: 0, help: "weight λ of the CE term" },
  ceStartEpoch: { type: "integer", default: null, min: 1, help: "first AToP epoch with the CE term" },
  eps: {
    type: "number",
    default: null,
    min: 0,
    help: "linf budget of AToP, AT and the evaluation (e.g. 8/255)",
  },
  l2Eps: { type: "number", default: null, min: 0, help: "l2 budget of the unseen-threat evaluation" },
  atopSteps: { type: "integer", default: null, min: 1, help: "adaptive mode: 1 = FGSM, k = PGD-k" },
  atopEot: { type: "integer", default: null, min: 1, help: "adaptive mode: EOT draws per gradient" },
  atopLr: { type: "number", default: null, min: 0, help: "AToP Adam learning rate" },
  evalPoints: { type: "integer", default: null, min: 1, help: "test points of the evaluation" },
  evalSeeds: { type: "integer", default: null, min: 1, help: "attack seeds of the purifier rows" },
  evalDraws: { type: "integer", default: null, min: 1, help: "R: draws per candidate of the purifier rows" },
  eot: { type: "integer", default: null, min: 1, help: "EOT draws of the full-gradient evaluation attacks" },
  logEvery: { type: "integer", default: null, min: 1, help: "steps between metric readbacks" },
  checkpointEvery: { type: "integer", default: null, min: 1, help: "steps between checkpoints" },
  stopAfterSteps: {
    type: "integer",
    default: null,
    min: 1,
    help:
      "stop the running stage when it reaches this step (counted from its start, across resumes), checkpointed, as if killed (resume tests)",
  },
} as const satisfies OptionTable;

/** Keys that may change on --resume (they do not change what is computed). */
export const RESUME_KEYS = ["out", "resume", "stages", "stopAfterSteps"];

/**
 * A study config read back from a run folder (`--resume`), checked against a fresh build of its
 * profile: every setting the profile has must be there with the same kind of value (null, for an
 * optional setting unset, goes with any; a thing of another kind, e.g. purifier, only needs its
 * kind), or the error names the file and the setting.
 */
export function checkSavedConfig(saved: StudyConfig, file: string): StudyConfig {
  const bad = (what: string) => {
    throw new UsageError(`${file}: ${what}; restore it, or start a new run without --resume`);
  };
  const profile = (saved as { profile?: unknown } | null)?.profile;
  if (typeof profile !== "string" || !profileNames().includes(profile)) {
    bad(`'config.profile' must be one of ${profileNames().join(", ")}, got ${JSON.stringify(profile)}`);
  }
  const kind = (v: unknown) => v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
  const an = (kind: string) => `${/^[aeiou]/.test(kind) ? "an" : "a"} ${kind}`;
  const walk = (have: unknown, want: unknown, path: string) => {
    const [h, w] = [kind(have), kind(want)];
    if (h === "undefined") bad(`'${path}' is missing (${an(w)} in profile ${profile})`);
    if (h === "null" || w === "null") return; // an optional setting, unset on one side
    if (h !== w) bad(`'${path}' must be ${an(w)}, got ${JSON.stringify(have)}`);
    // Another kind of a thing (a purifier, a transform) has its own settings: only its kind is checked.
    const kindOf = (v: unknown) => (v as { kind?: unknown }).kind;
    if (w === "object" && kindOf(want) !== undefined && kindOf(have) !== kindOf(want)) {
      walk(kindOf(have), kindOf(want), `${path}.kind`);
      return;
    }
    if (w === "object") {
      for (const [key, value] of Object.entries(want as Record<string, unknown>)) {
        walk((have as Record<string, unknown>)[key], value, `${path}.${key}`);
      }
    }
  };
  walk(saved, buildProfile(profile as string), "config");
  return saved;
}

export function parseStages(text: string): StudyStage[] | undefined {
  if (text === "all") return undefined;
  const stages = text.split(",").map((s) => s.trim()).filter(Boolean);
  if (stages.length === 0) throw new UsageError(`--stages: no stage given (${STAGES.join(", ")}, or all)`);
  for (const s of stages) {
    if (!(STAGES as readonly string[]).includes(s)) {
      throw new UsageError(`--stages: '${s}' is not one of ${STAGES.join(", ")} (or all)`);
    }
  }
  return stages as StudyStage[];
}

/** The profile's config with the given overrides applied (null values keep the profile's). */
export function studyConfig(values: OptionValues): StudyConfig {
  const v = values as Record<string, string | number | boolean | null>;
  const c = buildProfile(v.profile as string, v.seed as number);
  const set = <T>(value: unknown, apply: (x: T) => void) => {
    if (value !== null && value !== undefined) apply(value as T);
  };
  const classifiers = () => [c.classifier, ...(c.at ? [c.at] : [])];
  const purifierStages = () => [c.pretrain, c.atop];
  set<string>(v.dataset, (d) => {
    c.dataset = d;
    for (const s of [...classifiers(), ...purifierStages()]) s.dataset = d;
  });
  set<string>(v.dataDir, (d) => {
    for (const s of [...classifiers(), ...purifierStages()]) s.dataDir = d;
  });
  set<string>(v.model, (m) => classifiers().forEach((s) => s.model = m));
  set<string>(v.classifierCheckpoint, (p) => c.classifierCheckpoint = p);
  set<string>(v.classifierNormalize, (text) => {
    let normalize;
    try {
      normalize = parseNormalization(text, "--classifier-normalize");
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    classifiers().forEach((s) => s.normalize = normalize);
  });
  set<number>(v.classifierEpochs, (n) => c.classifier.epochs = n);
  set<number>(v.classifierLimit, (n) => c.classifier.limit = n);
  set<number>(v.classifierWidth, (w) => classifiers().forEach((s) => s.width = w));
  set<number>(v.atEpochs, (n) => {
    if (n === 0) c.at = null;
    else {c.at = {
        ...(c.at ?? { ...c.classifier, adversarial: "pgd", seed: c.classifier.seed + 1 }),
        epochs: n,
      };}
  });
  set<number>(v.atSteps, (n) => c.at && (c.at.advSteps = n));
  set<"classifier" | "scratch">(v.atInit, (x) => c.atInit = x);
  set<"coarse" | "deepfill">(v.generator, (k) => {
    // Another kind starts from its own default width; the same kind keeps the profile's.
    c.pretrain.purifier = k === c.pretrain.purifier.kind ? c.pretrain.purifier : { kind: k };
    c.atop.purifier = c.pretrain.purifier;
  });
  set<number>(v.generatorWidth, (w) => {
    c.pretrain.purifier = { ...c.pretrain.purifier, width: w };
    c.atop.purifier = c.pretrain.purifier;
  });
  const rt = { ...c.pretrain.rt };
  set<"rt1" | "rt2" | "rt3">(v.rt, (k) => rt.kind = k);
  set<number>(v.sigma, (x) => rt.sigma = x);
  set<number>(v.grid, (x) => rt.grid = x);
  set<number>(v.missing, (x) => rt.missing = x);
  if (v.fixedRandomness) rt.fixedRandomness = { seed: (v.seed as number) + 1 };
  c.pretrain.rt = c.atop.rt = rt;
  set<number>(v.pretrainEpochs, (n) => c.pretrain.epochs = n);
  set<number>(v.pretrainLimit, (n) => c.pretrain.limit = n);
  set<boolean>(v.gan, (g) => c.pretrain.gan = g);
  set<string>(v.atopModes, (text) => {
    const modes = text.split(",").map((s) => s.trim()).filter(Boolean);
    if (modes.length === 0) throw new UsageError(`--atop-modes: no mode given (${ATOP_MODES.join(", ")})`);
    for (const m of modes) {
      if (!(ATOP_MODES as readonly string[]).includes(m)) {
        throw new UsageError(`--atop-modes: '${m}' is not one of ${ATOP_MODES.join(", ")}`);
      }
    }
    c.atopModes = modes as AtopMode[];
  });
  set<number>(v.atopEpochs, (n) => c.atop.epochs = n);
  set<number>(v.atopLimit, (n) => c.atop.limit = n);
  set<number>(v.lambda, (x) => c.atop.lambda = x);
  set<number>(v.ceStartEpoch, (n) => c.atop.ceStartEpoch = n);
  set<number>(v.eps, (x) => {
    c.atop.attack = { ...c.atop.attack, eps: x };
    c.evaluation.linfEps = x;
    if (c.at) c.at.advEps = x;
  });
  set<number>(v.l2Eps, (x) => c.evaluation.l2Eps = x);
  set<number>(v.atopSteps, (n) => c.atop.attack = { ...c.atop.attack, steps: n });
  set<number>(v.atopEot, (n) => c.atop.attack = { ...c.atop.attack, eot: n });
  set<number>(v.atopLr, (x) => c.atop.optim = { ...c.atop.optim, lr: x });
  set<number>(v.evalPoints, (n) => c.evaluation.points = n);
  set<number>(v.evalSeeds, (n) => c.evaluation.seeds = n);
  set<number>(v.evalDraws, (n) => c.evaluation.draws = n);
  set<number>(v.eot, (n) => c.evaluation.eot = n);
  for (const s of [...classifiers(), ...purifierStages()]) {
    set<number>(v.logEvery, (n) => s.logEvery = n);
    set<number>(v.checkpointEvery, (n) => s.checkpointEvery = n);
  }
  return c;
}
