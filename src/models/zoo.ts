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
    describe: "CIFAR ResNet-20, widths 16-32-64 (·k), 3 blocks per stage",
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
  const stats = DATASET_STATS[options.dataset];
  if (!stats) {
    throw new Error(
      `unknown dataset '${options.dataset}' for normalisation; known: ${
        Object.keys(DATASET_STATS).join(", ")
      }`,
    );
  }
  const mean = stats.mean.length === options.inChannels
    ? stats.mean
    : new Array(options.inChannels).fill(stats.mean[0]);
  const std = stats.std.length === options.inChannels
    ? stats.std
    : new Array(options.inChannels).fill(stats.std[0]);
  return entry.create(options, mean, std);
}
