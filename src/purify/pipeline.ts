/**
 * The AToP inference pipeline  x -> t (random transform) -> g (generator) -> f (classifier).
 *
 * Images and attacks live in [0, 1]; the generator works in [-1, 1]. The transform maps x to the
 * generator input concat(masked 2x−1, ones, mask); the generator's tanh output y is mapped back
 * with (y + 1)/2 before the classifier (the released notebooks forgot this in training: ATOP.md
 * §5 trap 1). Every call of `model` draws fresh randomness (one mask and noise per sample), so
 * attacks see the defence as it runs; `purify(x, draw)` lets branches share one draw.
 * Nothing here scopes its intermediates with tidy(): inside a gradient scope the backward pass
 * still needs them; the caller's tidy/gradScope frees them.
 */
import type { Model } from "../attacks/types.ts";
import { add, addScalar, mulScalar, subScalar } from "../ops/arithmetic.ts";
import { l1Loss } from "../ops/loss.ts";
import type { Module } from "../nn/module.ts";
import { COARSE_DEFAULT_WIDTH, CoarseGenerator } from "../models/generator.ts";
import { DEEPFILL_DEFAULT_WIDTH, DeepFillGenerator } from "../models/deepfill.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { RandomTransform, RtDraw } from "./transforms.ts";

/** A purifier network: [N, C+2, H, W] generator input -> images in [-1, 1], one per stage. */
export interface Purifier extends Module {
  readonly channels: number;
  forward(input: Tensor): Tensor;
  /** The outputs the reconstruction loss covers (coarse, refined...); the last is the result. */
  stageOutputs(input: Tensor): Tensor[];
}

export type PurifierKind = "coarse" | "deepfill";

export interface PurifierConfig {
  kind: PurifierKind;
  /** Base width (coarse default 16, DeepFill 24). */
  width?: number;
  /** DeepFill's contextual attention (default: on real GPUs only). */
  contextualAttention?: boolean;
  /** DeepFill: run at this integer multiple of the input size (DeepFillConfig.inputScale). */
  inputScale?: number;
}

/** The base width a purifier config builds (its own, or the kind's default). */
export function purifierWidth(config: PurifierConfig): number {
  return config.width ?? (config.kind === "deepfill" ? DEEPFILL_DEFAULT_WIDTH : COARSE_DEFAULT_WIDTH);
}

/** Builds a purifier for images of `channels` channels. */
export function createPurifier(config: PurifierConfig, channels: number): Purifier {
  switch (config.kind) {
    case "coarse":
      if ((config.inputScale ?? 1) !== 1) {
        throw new RangeError(
          `createPurifier: inputScale is a DeepFill setting (the coarse purifier has none)`,
        );
      }
      return new CoarseGenerator({ channels, width: config.width });
    case "deepfill":
      return new DeepFillGenerator({
        channels,
        width: config.width,
        contextualAttention: config.contextualAttention,
        inputScale: config.inputScale,
      });
    default:
      throw new RangeError(`createPurifier: unknown purifier "${config.kind}" (coarse or deepfill)`);
  }
}

/** [0, 1] -> [-1, 1]. */
export function toSigned(x: Tensor): Tensor {
  return subScalar(mulScalar(x, 2), 1);
}

/** [-1, 1] -> [0, 1]. */
export function toUnit(y: Tensor): Tensor {
  return addScalar(mulScalar(y, 0.5), 0.5);
}

export class PurifiedClassifier {
  constructor(
    readonly transform: RandomTransform,
    readonly generator: Purifier,
    readonly classifier: Module,
  ) {}

  /** Every stage's purified image in [−1, 1], [N, C, H, W] (RT3 copies recombined). */
  stages(x: Tensor, draw: RtDraw): Tensor[] {
    const outputs = this.generator.stageOutputs(this.transform.apply(x, draw));
    return outputs.map((y) => this.transform.combine(y, draw));
  }

  /**
   * The purified image in [0, 1] for a draw. Without one, a fresh draw is made whose tensors
   * belong to the caller's scope (a backward pass may still need the mask).
   */
  purify(x: Tensor, draw: RtDraw = this.transform.draw(x.shape)): Tensor {
    return toUnit(this.transform.combine(this.generator.forward(this.transform.apply(x, draw)), draw));
  }

  /** Classifier logits of the purified image. */
  logits(x: Tensor, draw?: RtDraw): Tensor {
    return this.classifier.forward(this.purify(x, draw));
  }

  /** The whole defence as an attack target: a fresh draw on every call. */
  get model(): Model {
    return (x) => this.logits(x);
  }
}

/**
 * The generator's own loss l_g: L1 between the clean image (in [−1, 1]) and every stage's
 * output over the whole image (weights 1: ATOP.md §3), summed over stages.
 */
export function reconstructionLoss(stages: Tensor[], target: Tensor): Tensor {
  let total = l1Loss(stages[0], target);
  for (const s of stages.slice(1)) total = add(total, l1Loss(s, target));
  return total;
}
