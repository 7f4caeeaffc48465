/** What every command shares: clean one-line errors and exit codes (2: usage, 1: failure). */
import { DATASETS } from "../src/data/by_name.ts";
import { MODELS } from "../src/models/zoo.ts";
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
} as const satisfies OptionTable;
