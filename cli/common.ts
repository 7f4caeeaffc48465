/** What every command shares: clean one-line errors and exit codes (2: usage, 1: failure). */
import { DATASETS } from "../src/data/by_name.ts";
import { MODELS, type Normalization, parseNormalization } from "../src/models/zoo.ts";
import type { ClassifierConfig } from "../src/train/classifier_options.ts";
import { readClassifierCheckpoint } from "../src/train/classifier.ts";
import { isFile } from "../src/io/paths.ts";
import { type OptionTable, UsageError } from "../src/train/options.ts";
import { NoAdapterError } from "../src/device/errors.ts";

export async function runCommand(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    const error = e as Error;
    if (error instanceof UsageError) {
      console.error(`error: ${error.message}`);
      Deno.exit(2);
    }
    console.error(`error: ${error.message}`);
    if (!(error instanceof NoAdapterError) && Deno.env.get("ATOP_DEBUG")) console.error(error.stack);
    Deno.exit(1);
  }
}

/** Options of commands that load a classifier checkpoint and a dataset split (eval, attack). */
export const CHECKPOINT_OPTIONS = {
  split: { type: "string", default: "test", choices: ["train", "test"], help: "dataset split" },
  dataDir: { type: "string", default: "data", help: "folder holding CIFAR binary files" },
  model: {
    type: "string",
    default: null,
    choices: Object.keys(MODELS),
    help: "architecture, for checkpoints without our metadata",
  },
  dataset: {
    type: "string",
    default: null,
    choices: Object.keys(DATASETS),
    help: "dataset, for checkpoints without our metadata",
  },
  width: {
    type: "integer",
    default: 1,
    min: 1,
    help: "width multiplier, for checkpoints without our metadata",
  },
  normalize: {
    type: "string",
    default: null,
    help: "input normalisation the weights were trained with, for checkpoints without our metadata: " +
      "none (raw [0,1], e.g. RobustBench WRNs), a dataset name, or <mean,...>/<std,...> " +
      "(e.g. 0.4914,0.4822,0.4465/0.2023,0.1994,0.2010 for kuangliu's CIFAR ResNets); default: --dataset's " +
      "(wrn-28-10: none, as RobustBench's)",
  },
} as const satisfies OptionTable;

/**
 * What `readClassifierCheckpoint` needs for weights without our metadata, from CHECKPOINT_OPTIONS
 * (--normalize parsed here, so a bad value is a usage error before anything loads).
 */
export function checkpointFallback(values: Record<string, unknown>) {
  let normalize: Normalization | null = null;
  if (values.normalize !== null && values.normalize !== undefined) {
    try {
      normalize = parseNormalization(values.normalize as string, "--normalize");
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  return {
    model: values.model as string | null,
    dataset: values.dataset as string | null,
    width: values.width as number,
    normalize,
  };
}

/**
 * Reads the classifier of `--checkpoint` for eval and attack: a missing file is a usage error
 * naming the flag; our checkpoints carry their model, dataset and width, so those flags, when
 * `explicit` and different, are refused rather than silently ignored; imported weights get the
 * reminder of their assumed normalisation.
 */
export async function readCheckpointArgument(
  values: Record<string, unknown>,
  explicit: ReadonlySet<string>,
): Promise<Awaited<ReturnType<typeof readClassifierCheckpoint>>> {
  const path = values.checkpoint as string;
  if (!(await isFile(path))) {
    throw new UsageError(`--checkpoint ${path}: no such file (give a .safetensors checkpoint)`);
  }
  const read = await readClassifierCheckpoint(path, checkpointFallback(values));
  if (read.imported) console.error(importedWeightsNote(read.config));
  else {
    for (const key of ["model", "dataset", "width"] as const) {
      if (explicit.has(key) && values[key] !== read.config[key]) {
        throw new UsageError(
          `--${key} ${values[key]}: ${path} holds a ${key} ${read.config[key]} (from its metadata); ` +
            `drop --${key}, which is for weights without our metadata`,
        );
      }
    }
  }
  return read;
}

/** The reminder for imported weights: their input normalisation is an assumption. */
export function importedWeightsNote(config: ClassifierConfig, flag = "--normalize"): string {
  const n = config.normalize;
  return n
    ? `imported weights: inputs normalised with mean ${n.mean.join(",")}, std ${n.std.join(",")}; if they ` +
      `were trained otherwise, pass ${flag}`
    : `imported weights: inputs normalised with ${config.dataset}'s statistics; if they were trained ` +
      `otherwise, pass ${flag} (none for raw [0,1] inputs, e.g. RobustBench WRNs)`;
}

/**
 * Creates `dir` if needed and writes (then removes) a probe file in it: a usage error naming
 * `flag` when that fails, before any long work whose results would go there.
 */
export async function checkWritableFolder(dir: string, flag: string): Promise<void> {
  const probe = `${dir}/.write-probe-${Deno.pid}`;
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(probe, new Uint8Array(0));
    await Deno.remove(probe);
  } catch (e) {
    throw new UsageError(`${flag} ${dir}: not a writable folder (${(e as Error).message})`);
  }
}

/**
 * A warning for an l∞ budget of 1 or more: pixels are in [0, 1], so such a ball holds every image
 * and the "attack" may replace the input outright; budgets are usually written k/255.
 */
export function linfBudgetWarning(flag: string, eps: number): string | null {
  if (eps < 1) return null;
  return `warning: ${flag} ${eps} is an l∞ budget of at least 1 on pixels in [0, 1]: every image is ` +
    `within it; did you mean ${eps}/255 (= ${(eps / 255).toFixed(4)})?`;
}
