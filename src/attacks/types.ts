/**
 * The contract every attack follows (ATTACKS.md fixes the constants):
 * - inputs are images in [0,1], NCHW f32; labels i32 [N];
 * - the model is any differentiable function `(x) => logits [N, K]`, possibly random (a fresh
 *   draw of its randomness on every call: EOT draws are just repeated calls);
 * - an attack returns x_adv with ‖x_adv − x‖ ≤ eps (per sample, in the threat model's norm; StAdv
 *   bounds its flow instead) and x_adv ∈ [0,1], as a new tensor the caller owns;
 * - attacks are synchronous and never read GPU data back (per-sample bookkeeping runs in
 *   kernels), so they can run inside training steps (adversarial training, adaptive AToP).
 */
import type { Tensor } from "../tensor/tensor.ts";

/** A classifier to attack: x [N,C,H,W] in [0,1] -> logits [N,K]. May be random. */
export type Model = (x: Tensor) => Tensor;

export type Norm = "linf" | "l2";

export interface ThreatModel {
  norm: Norm;
  /** Budget in [0,1] pixel units (linf) or Euclidean norm over C·H·W (l2). */
  eps: number;
}

/** Options every gradient attack accepts. */
export interface GradientOptions {
  /** EOT draws per gradient (fresh randomness of a random model each); default 1. */
  eot?: number;
  /** Average logits over the EOT draws before the loss, instead of averaging gradients. */
  averageLogits?: boolean;
  /**
   * BPDA: forward through `model`, but differentiate through `surrogate`. For purifier ∘
   * transform treated as the identity in the backward pass, the surrogate is straight-through:
   * `x => f(x + detach(purify(x) − x))` (f's gradient at the purified image). The classifier
   * alone, f(x), is protocol B's transfer gradient instead, much weaker on purifiers.
   */
  surrogate?: Model;
  /** Seed of the attack's own randomness (random starts, Square's proposals). */
  seed?: number;
}

/** The signature of a registered attack (see registry.ts). */
export type AttackFn = (
  model: Model,
  x: Tensor,
  y: Tensor,
  threat: ThreatModel,
  options?: Record<string, unknown>,
) => Tensor;
