/**
 * The model zoo by name, so configs and the CLI can say `--model resnet20`.
 */
import type { Module } from "../nn/module.ts";
import { DATASET_STATS } from "./normalize.ts";
import { ResNet } from "./resnet.ts";
import { SmallCnn } from "./small_cnn.ts";
import { WideResNet } from "./wideresnet.ts";

export interface ModelOptions {
  inChannels: number;
  numClasses: number;
  /** Dataset whose channel statistics the model normalises with (see DATASET_STATS). */
  dataset: string;
  /** Width multiplier of the small variants (resnet8/20, small-cnn). */
  widthMultiplier?: number;
  /**
   * The input normalisation, instead of the dataset's statistics: what imported weights were
   * trained with ({ mean: [0], std: [1] } for raw [0, 1] inputs, e.g. RobustBench's WRNs).
   */
  normalize?: Normalization;
}

/** Channel mean and std an input is normalised with (one value, or one per channel). */
export interface Normalization {
  mean: number[];
  std: number[];
}

/**
 * Parses a normalisation given as text: "none" (raw [0, 1] inputs), a DATASET_STATS name, or
 * "<mean,...>/<std,...>" (e.g. "0.4914,0.4822,0.4465/0.2023,0.1994,0.2010"). Errors name `what`.
 */
export function parseNormalization(text: string, what = "normalize"): Normalization {
  const named = Object.hasOwn(DATASET_STATS, text) ? DATASET_STATS[text] : null;
  if (named) return { mean: [...named.mean], std: [...named.std] };
  const parts = text.split("/");
  const numbers = (s: string) => s.split(",").map((v) => Number(v.trim()));
  const [mean, std] = parts.length === 2 ? [numbers(parts[0]), numbers(parts[1])] : [[], []];
  if (
    mean.length === 0 || mean.length !== std.length || !mean.every(Number.isFinite) ||
    !std.every((v) => Number.isFinite(v) && v > 0)
  ) {
    throw new RangeError(
      `${what}: expected none, one of ${Object.keys(DATASET_STATS).join(", ")}, or <mean,...>/<std,...> ` +
        `with as many means as stds (stds > 0), got '${text}'`,
    );
  }
  return { mean, std };
}

type Factory = (o: ModelOptions, mean: number[], std: number[]) => Module;

const small = (blocks: number[]): Factory => (o, mean, std) =>
  new ResNet({
    block: "basic",
    blocks,
    widths: [16, 32, 64].map((w) => w * (o.widthMultiplier ?? 1)),
    inChannels: o.inChannels,
    numClasses: o.numClasses,
    mean,
    std,
  });

const imagenetStyle = (block: "basic" | "bottleneck", blocks: number[]): Factory => (o, mean, std) =>
  new ResNet({
    block,
    blocks,
    widths: [64, 128, 256, 512],
    inChannels: o.inChannels,
    numClasses: o.numClasses,
    mean,
    std,
  });

export const MODELS: Record<string, { describe: string; create: Factory }> = {
  "small-cnn": {
    describe: "two conv-BN-ReLU stages (width 8·k), for tests",
    create: (o, mean, std) =>
      new SmallCnn({
        inChannels: o.inChannels,
        numClasses: o.numClasses,
        width: 8 * (o.widthMultiplier ?? 1),
        mean,
        std,
      }),
  },
  resnet8: { describe: "CIFAR ResNet-8, widths 16-32-64 (·k), 1 block per stage", create: small([1, 1, 1]) },
  resnet20: {
    describe: "CIFAR ResNet-20, widths 16-32-64 (·k), 3 blocks per stage, 1x1-conv shortcuts (option B)",
    create: small([3, 3, 3]),
  },
  resnet18: {
    describe: "ResNet-18 (BasicBlock 2-2-2-2, widths 64-512)",
    create: imagenetStyle("basic", [2, 2, 2, 2]),
  },
  resnet34: { describe: "ResNet-34 (BasicBlock 3-4-6-3)", create: imagenetStyle("basic", [3, 4, 6, 3]) },
  resnet50: { describe: "ResNet-50 (Bottleneck 3-4-6-3)", create: imagenetStyle("bottleneck", [3, 4, 6, 3]) },
  "wrn-28-10": {
    describe: "WideResNet-28-10 (RobustBench layout)",
    create: (o, mean, std) =>
      new WideResNet({ depth: 28, widen: 10, inChannels: o.inChannels, numClasses: o.numClasses, mean, std }),
  },
};

export function createModel(name: string, options: ModelOptions): Module {
  const entry = MODELS[name];
  if (!entry) {
    throw new Error(`unknown model '${name}'; choose one of: ${Object.keys(MODELS).join(", ")}`);
  }
  const stats = options.normalize ?? DATASET_STATS[options.dataset];
  if (!stats) {
    throw new Error(
      `unknown dataset '${options.dataset}' for normalisation; known: ${
        Object.keys(DATASET_STATS).join(", ")
      }`,
    );
  }
  for (const values of options.normalize ? [stats.mean, stats.std] : []) {
    if (values.length !== 1 && values.length !== options.inChannels) {
      throw new RangeError(
        `model '${name}': the normalisation has ${values.length} values for ${options.inChannels} input ` +
          `channels (give one, or one per channel)`,
      );
    }
  }
  const perChannel = (v: number[]) =>
    v.length === options.inChannels ? v : new Array(options.inChannels).fill(v[0]);
  return entry.create(options, perChannel(stats.mean), perChannel(stats.std));
}
