/**
 * FGSM (Goodfellow et al. 2015): one step of length ε along the (EOT) loss gradient.
 *   L∞: clip01(x + ε·sign(g));   L2: clip01(x + ε·g/(‖g‖ + 1e-12)).
 * Both are `step(x, g, ε, x, threat)`: a step of exactly ε never leaves the ball, so the
 * projection only clips to the box.
 */
import { type AttackLoss, lossGradient, resolveLoss } from "./gradient.ts";
import { step } from "./projection.ts";
import type { GradientOptions, Model, ThreatModel } from "./types.ts";
import { tidy } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";

export interface FgsmOptions extends GradientOptions {
  /** "ce" (default), "margin" (maximises max_{i≠y} z_i − z_y), or a per-sample loss. */
  loss?: AttackLoss;
}

/** x_adv (a new tensor the caller owns) with ‖x_adv − x‖ ≤ ε and x_adv ∈ [0,1]. */
export function fgsm(
  model: Model,
  x: Tensor,
  y: Tensor,
  threat: ThreatModel,
  options: FgsmOptions = {},
): Tensor {
  const lossFn = resolveLoss("fgsm", options.loss);
  return tidy(() => {
    const { grad } = lossGradient(model, x, y, lossFn, options);
    return step(x, grad, threat.eps, x, threat);
  });
}
