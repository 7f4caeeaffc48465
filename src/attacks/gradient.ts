/**
 * The gradient every gradient attack follows (ATTACKS.md, "EOT gradient"):
 *
 *   g(x) = (1/E) Σ_k ∇_x Σ_n L(f_k(x)_n, y_n)
 *
 * where f_k is the k-th call of a possibly random model (a fresh draw of its randomness per
 * call), and the per-sample loss is tracked as the EOT mean (1/E) Σ_k L(f_k(x)_n, y_n), which
 * attacks use for keep-best decisions. Variants:
 * - averageLogits: L((1/E) Σ_k f_k(x), y), one loss of the mean logits, differentiated through
 *   all E calls at once;
 * - BPDA (options.surrogate): the loss value comes from `model`, the gradient from `surrogate`
 *   (e.g. the classifier with the purifier replaced by the identity in the backward pass).
 * Gradients are w.r.t. x only: model parameters are constants (grad() in "inputs" mode).
 */
import { grad } from "../autograd/backward.ts";
import { noGrad } from "../autograd/tape.ts";
import { add, mulScalar, neg } from "../ops/arithmetic.ts";
import { sum } from "../ops/reduce.ts";
import { keep, tidy } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { marginLoss, perSampleCrossEntropy } from "./losses.ts";
import type { GradientOptions, Model } from "./types.ts";

/** A per-sample loss: logits [N, K], labels i32 [N] -> f32 [N] (differentiable in the logits). */
export type PerSampleLoss = (logits: Tensor, y: Tensor) => Tensor;

/** Per-sample softmax cross-entropy (the default attack loss). */
export const perSampleCe: PerSampleLoss = perSampleCrossEntropy;

/**
 * The loss an attack maximises: "ce" (cross-entropy), "margin" (the CW loss
 * max_{i≠y} z_i − z_y = −marginLoss, positive once misclassified), or any per-sample loss.
 */
export type AttackLoss = "ce" | "margin" | PerSampleLoss;

export function resolveLoss(op: string, loss: AttackLoss = "ce"): PerSampleLoss {
  if (typeof loss === "function") return loss;
  if (loss === "ce") return perSampleCe;
  if (loss === "margin") return (logits, y) => neg(marginLoss(logits, y));
  throw new Error(`${op}: unknown loss '${loss}'; use "ce", "margin" or a function (logits, y) => [N]`);
}

export interface LossGradient {
  /** EOT-averaged gradient of the summed per-sample loss w.r.t. x (shape of x). */
  grad: Tensor;
  /** EOT-mean per-sample loss of `model` (f32 [N]); with averageLogits, the loss of the mean logits. */
  loss: Tensor;
  /** EOT-mean logits of `model` [N, K] (for misclassification flags). */
  logits: Tensor;
}

function eotDraws(op: string, options: GradientOptions): number {
  const e = options.eot ?? 1;
  if (!Number.isInteger(e) || e < 1) throw new RangeError(`${op}: eot must be an integer >= 1, got ${e}`);
  return e;
}

/** Running sum that takes ownership of its terms (the previous sum is freed on every add). */
function accumulate(total: Tensor | null, term: Tensor): Tensor {
  if (!total) return term;
  const next = add(total, term);
  total.dispose();
  term.dispose();
  return next;
}

/**
 * The mean of same-shaped tensors, taking ownership of them. The result is a new tensor of the
 * current scope even for one term (a view), so kept terms do not escape the caller's tidy().
 */
function meanOf(terms: Tensor[]): Tensor {
  let total: Tensor | null = null;
  for (const t of terms) total = accumulate(total, t);
  const mean = terms.length === 1 ? total!.alias() : mulScalar(total!, 1 / terms.length);
  total!.dispose();
  return mean;
}

/** mean over E calls of `f` (differentiable when recorded). */
function meanOfCalls(f: Model, x: Tensor, draws: number): Tensor {
  let total: Tensor | null = null;
  for (let k = 0; k < draws; k++) total = total ? add(total, f(x)) : f(x);
  return draws === 1 ? total! : mulScalar(total!, 1 / draws);
}

/**
 * EOT-mean per-sample loss and EOT-mean logits of `model` at x, forward only (no gradient):
 * what attacks evaluate after their last step. With averageLogits the loss is that of the mean
 * logits.
 */
export function lossValue(
  model: Model,
  x: Tensor,
  y: Tensor,
  lossFn: PerSampleLoss = perSampleCe,
  options: GradientOptions = {},
): { loss: Tensor; logits: Tensor } {
  const draws = eotDraws("lossValue", options);
  return noGrad(() =>
    tidy(() => {
      if (options.averageLogits || draws === 1) {
        const logits = meanOfCalls(model, x, draws);
        return { loss: lossFn(logits, y), logits };
      }
      let logits: Tensor | null = null, loss: Tensor | null = null;
      for (let k = 0; k < draws; k++) {
        const z = model(x);
        loss = accumulate(loss, lossFn(z, y));
        logits = accumulate(logits, z);
      }
      return { loss: mulScalar(loss!, 1 / draws), logits: mulScalar(logits!, 1 / draws) };
    })
  );
}

/**
 * EOT gradient of Σ_n L(f(x)_n, y_n) w.r.t. x, with the EOT-mean per-sample loss and logits.
 * See the module comment for averageLogits and BPDA (options.surrogate). Records nothing on an
 * enclosing training tape; the caller owns the three returned tensors.
 */
export function lossGradient(
  model: Model,
  x: Tensor,
  y: Tensor,
  lossFn: PerSampleLoss = perSampleCe,
  options: GradientOptions = {},
): LossGradient {
  const draws = eotDraws("lossGradient", options);
  const through = options.surrogate ?? model;
  return noGrad(() =>
    tidy(() => {
      // Loss and logits of the differentiated calls, kept out of grad()'s scope (which would
      // free them) when they are also the reported values (no surrogate).
      const losses: Tensor[] = [], logitsSeen: Tensor[] = [];
      const capture = (l: Tensor, z: Tensor) => {
        if (options.surrogate) return;
        losses.push(keep(l));
        logitsSeen.push(keep(z));
      };
      let g: Tensor;
      try {
        if (options.averageLogits) {
          // One loss of the mean logits; its gradient runs back through all E calls.
          g = grad((xi) => {
            const z = meanOfCalls(through, xi, draws);
            const l = lossFn(z, y);
            capture(l, z);
            return sum(l);
          }, [x]).grads[0];
        } else {
          const perDraw: Tensor[] = [];
          for (let k = 0; k < draws; k++) {
            perDraw.push(
              grad((xi) => {
                const z = through(xi);
                const l = lossFn(z, y);
                capture(l, z);
                return sum(l);
              }, [x]).grads[0],
            );
          }
          g = meanOf(perDraw);
        }
      } catch (e) {
        // The kept losses and logits are out of every scope: a failed draw must not leak them.
        for (const t of [...losses, ...logitsSeen]) t.dispose();
        throw e;
      }
      if (options.surrogate) return { grad: g, ...lossValue(model, x, y, lossFn, options) };
      return { grad: g, loss: meanOf(losses), logits: meanOf(logitsSeen) };
    })
  );
}
