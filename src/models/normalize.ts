/**
 * Input normalisation inside the model: inputs are always images in [0,1], and each model
 * subtracts its dataset's channel mean and divides by the channel std itself. Attacks and
 * purifiers therefore work in pixel units, never in normalised units (ATTACKS.md).
 */
import { subDiv } from "../ops/arithmetic.ts";
import { fromArray } from "../ops/creation.ts";
import { Module } from "../nn/module.ts";
import { keep } from "../tensor/scope.ts";
import { ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";

export const DATASET_STATS: Record<string, { mean: number[]; std: number[] }> = {
  "fashion-mnist": { mean: [0.2860], std: [0.3530] },
  mnist: { mean: [0.1307], std: [0.3081] },
  cifar10: { mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616] },
  cifar100: { mean: [0.5071, 0.4865, 0.4409], std: [0.2673, 0.2564, 0.2762] },
  none: { mean: [0], std: [1] },
};

/** (x - mean) / std per channel. The constants are not parameters and not in checkpoints. */
export class Normalize extends Module {
  readonly #mean: Tensor;
  readonly #std: Tensor;

  constructor(readonly mean: number[], readonly std: number[]) {
    super();
    if (mean.length !== std.length) throw new Error("Normalize: mean and std lengths differ");
    this.#mean = keep(fromArray(mean, [mean.length, 1, 1]));
    this.#std = keep(fromArray(std, [std.length, 1, 1]));
  }

  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || (x.shape[1] !== this.mean.length && this.mean.length !== 1)) {
      throw new ShapeError(
        "Normalize",
        `input [${x.shape}] does not have ${this.mean.length} channels (NCHW expected)`,
      );
    }
    return subDiv(x, this.#mean, this.#std);
  }

  override dispose(): void {
    this.#mean.dispose();
    this.#std.dispose();
  }
}
