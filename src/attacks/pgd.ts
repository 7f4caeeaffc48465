/**
 * PGD (Madry et al. 2018), L∞ and L2, with EOT, BPDA (options.surrogate), restarts and
 * keep-best:
 *
 *   x_0 = random point of the ball (or x);  x_{i+1} = P(x_i + α·dir(g(x_i)))
 *
 * with dir = sign for L∞ and g/‖g‖ for L2 (projection.ts fuses step and projection), and g the
 * EOT gradient (gradient.ts). Per sample it returns the iterate with the highest EOT-mean loss,
 * or any iterate seen misclassified (argmax of the EOT-mean logits ≠ y), over all restarts:
 * the keep-best update runs in kernels, so nothing is read back and the attack is synchronous.
 * Cost: restarts · (steps gradient evaluations + 1 forward evaluation), each × EOT draws.
 */
import { keep, tidy, track } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { type AttackLoss, lossGradient, lossValue, resolveLoss } from "./gradient.ts";
import { clip01, disposeBest, initBest, keepBest, misclassified, randomStart, step } from "./projection.ts";
import type { GradientOptions, Model, ThreatModel } from "./types.ts";

export interface PgdOptions extends GradientOptions {
  /** Iterations per restart (default 10). */
  steps?: number;
  /** Step size α (default `defaultPgdStepSize`: 2/255 at ε = 8/255 for 10 steps or more). */
  stepSize?: number;
  /** Start from a random point of the ball (default true): U(−ε, ε) for L∞, a Gaussian
   * direction of norm ε for L2. Without, restarts repeat the same deterministic run. */
  randomStart?: boolean;
  /** Independent runs (default 1); the best iterate over all of them is returned. */
  restarts?: number;
  /** Loss to maximise (default "ce"). */
  loss?: AttackLoss;
}

/**
 * The default step α: max(ε/4, 2.5·ε/steps). From 10 steps on that is ε/4, ATTACKS.md's a = 2/255
 * at ε = 8/255 (Madry et al.'s PGD-10, and the usual fixed 2/255 of PGD-20); shorter runs (PGD-3
 * adversarial training) take 2.5·ε/steps, the rule of the `robustness` library, so that they can
 * still walk 2.5·ε in all and reach the boundary from any start.
 */
export function defaultPgdStepSize(eps: number, steps: number): number {
  return Math.max(eps / 4, 2.5 * eps / Math.max(steps, 1));
}

function checkCount(name: string, v: number, min: number): number {
  if (!Number.isInteger(v) || v < min) {
    throw new RangeError(`pgd: ${name} must be an integer >= ${min}, got ${v}`);
  }
  return v;
}

/** x_adv (a new tensor the caller owns) with ‖x_adv − x‖ ≤ ε and x_adv ∈ [0,1]. */
export function pgd(
  model: Model,
  x: Tensor,
  y: Tensor,
  threat: ThreatModel,
  options: PgdOptions = {},
): Tensor {
  const steps = checkCount("steps", options.steps ?? 10, 0);
  const restarts = checkCount("restarts", options.restarts ?? 1, 1);
  const alpha = options.stepSize ?? defaultPgdStepSize(threat.eps, steps);
  if (!Number.isFinite(alpha) || alpha < 0) {
    throw new RangeError(`pgd: stepSize must be finite and >= 0, got ${alpha}`);
  }
  const lossFn = resolveLoss("pgd", options.loss);
  const best = initBest(x);
  try {
    for (let r = 0; r < restarts; r++) {
      let current = keep(
        tidy(() =>
          (options.randomStart ?? true) ? randomStart(x, threat, options.seed, { stream: r }) : clip01(x)
        ),
      );
      for (let i = 0; i < steps; i++) {
        const next = tidy(() => {
          const { grad, loss, logits } = lossGradient(model, current, y, lossFn, options);
          keepBest(best, current, loss, misclassified(logits, y));
          return step(current, grad, alpha, x, threat);
        });
        current.dispose();
        current = keep(next);
      }
      // The last iterate's loss is not known yet: one more (forward-only) evaluation.
      tidy(() => {
        const { loss, logits } = lossValue(model, current, y, lossFn, options);
        keepBest(best, current, loss, misclassified(logits, y));
      });
      current.dispose();
    }
  } catch (e) {
    disposeBest(best);
    throw e;
  }
  best.loss.dispose();
  best.misclassified.dispose();
  track(best.x); // owned by the caller's scope, like any op's output
  return best.x;
}
