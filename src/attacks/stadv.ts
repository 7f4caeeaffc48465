/**
 * StAdv (Xiao et al., ICLR 2018): spatially transformed adversarial examples. Instead of adding a
 * perturbation, it moves pixels: the parameter is a per-sample sampling grid g [N, H, W, 2]
 * (normalised coordinates, see src/ops/grid_sample.ts), the adversarial image is the bilinear
 * resampling gridSample(x, g), and the threat is a bound on the flow g − id rather than on
 * ‖x_adv − x‖ (the "unseen" spatial threat model of ATTACKS.md).
 *
 *   g_0 = id
 *   repeat `steps` times:
 *     L(g) = margin(f(gridSample(x, g))) + τ·flowSmoothness(g − id)    (per sample; summed)
 *     g ← Adam step on ∇_g L (lr, betas 0.9/0.999, eps 1e-8, bias-corrected, like torch)
 *     g ← clamp(clamp(g, −1, 1), id − bound, id + bound)
 *
 * margin = z_y − max_{i≠y} z_i; its gradient is EOT-averaged over `eot` calls of a random model
 * (gradient.ts), and every iterate (the last one included) is scored for keep-best: per sample
 * the grid seen misclassified, else the one with the lowest EOT-mean margin, wins.
 * Returns x_adv = clip01(gridSample(x, best grid)). Nothing is read back.
 */
import { grad } from "../autograd/backward.ts";
import { noGrad } from "../autograd/tape.ts";
import { sub } from "../ops/arithmetic.ts";
import { zerosLike } from "../ops/creation.ts";
import { mapElements } from "../ops/elementwise.ts";
import { flowSmoothness, gridSample, identityGrid } from "../ops/grid_sample.ts";
import { sum } from "../ops/reduce.ts";
import { keep, tidy, track } from "../tensor/scope.ts";
import { ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { lossGradient, lossValue, resolveLoss } from "./gradient.ts";
import { clip01, disposeBest, initBest, keepBest, misclassified } from "./projection.ts";
import type { Model } from "./types.ts";

export interface StAdvOptions {
  /** Largest flow per coordinate, in normalised units (default 0.05 = 0.8 px at 32×32). */
  bound?: number;
  /** Adam steps (default 100). */
  steps?: number;
  /** Adam learning rate (default 0.01). */
  lr?: number;
  /** Weight of the flow-smoothness term (default 0.05). */
  tau?: number;
  /** Model calls averaged per gradient and per score, for random models (default 1). */
  eot?: number;
  /** Unused: StAdv starts at the identity and draws nothing itself (the model draws its own
   * randomness). Accepted so every attack takes the same options. */
  seed?: number;
}

const BETA1 = 0.9, BETA2 = 0.999, ADAM_EPS = 1e-8;

function checkOptions(x: Tensor, y: Tensor, o: Required<Omit<StAdvOptions, "seed">>): void {
  const op = "stAdv";
  if (x.rank !== 4 || x.dtype !== "f32") {
    throw new ShapeError(op, `expects x f32 [N, C, H, W], got ${x.describe()}`);
  }
  if (y.dtype !== "i32" || y.rank !== 1 || y.shape[0] !== x.shape[0]) {
    throw new ShapeError(op, `expects labels i32 [${x.shape[0]}], got ${y.describe()}`);
  }
  for (const [name, v] of [["bound", o.bound], ["lr", o.lr], ["tau", o.tau]] as const) {
    if (!Number.isFinite(v) || v < 0) {
      throw new RangeError(`${op}: ${name} must be finite and >= 0, got ${v}`);
    }
  }
  if (!Number.isInteger(o.steps) || o.steps < 0) throw new RangeError(`${op}: steps must be an integer >= 0`);
  if (!Number.isInteger(o.eot) || o.eot < 1) throw new RangeError(`${op}: eot must be an integer >= 1`);
}

/** StAdv returning both x_adv and the best sampling grid [N, H, W, 2] (the caller owns both). */
export function stAdvWithGrid(
  model: Model,
  x: Tensor,
  y: Tensor,
  options: StAdvOptions = {},
): { xAdv: Tensor; grid: Tensor } {
  const o = {
    bound: options.bound ?? 0.05,
    steps: options.steps ?? 100,
    lr: options.lr ?? 0.01,
    tau: options.tau ?? 0.05,
    eot: options.eot ?? 1,
  };
  checkOptions(x, y, o);
  const [n, , h, w] = x.shape;
  // The model as a function of the grid; keep-best keeps the highest loss, so score −margin.
  const ofGrid: Model = (g) => model(gridSample(x, g));
  const negMargin = resolveLoss("stAdv", "margin");
  const eot = { eot: o.eot };
  const identity = keep(identityGrid(n, h, w));
  let grid = keep(identity.alias());
  let m = keep(zerosLike(identity)), v = keep(zerosLike(identity));
  const best = initBest(identity);
  try {
    for (let t = 1; t <= o.steps; t++) {
      const next = tidy(() => {
        const { grad: gAdv, loss, logits } = lossGradient(ofGrid, grid, y, negMargin, eot);
        keepBest(best, grid, loss, misclassified(logits, y));
        const gSmooth = noGrad(() => grad((g) => sum(flowSmoothness(sub(g, identity))), [grid]).grads[0]);
        // ∇ of margin + τ·smoothness (gAdv is the gradient of −margin).
        const g = mapElements("stAdv.grad", "b * s0 - a", [gAdv, gSmooth], { scalars: [o.tau] });
        const m2 = mapElements("stAdv.adam", "a * s0 + b * s1", [m, g], { scalars: [BETA1, 1 - BETA1] });
        const v2 = mapElements("stAdv.adam", "a * s0 + b * b * s1", [v, g], { scalars: [BETA2, 1 - BETA2] });
        // torch's Adam: lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + eps).
        const stepSize = o.lr / (1 - BETA1 ** t), invCorrection2 = 1 / Math.sqrt(1 - BETA2 ** t);
        const delta = mapElements("stAdv.adam", `s0 * a / (sqrt(b) * s1 + ${ADAM_EPS})`, [m2, v2], {
          scalars: [stepSize, invCorrection2],
        });
        // Projection: the image box of the grid, then the flow bound around the identity.
        const g2 = mapElements("stAdv.project", "clamp(clamp(a - b, -1.0, 1.0), c - s0, c + s0)", [
          grid,
          delta,
          identity,
        ], { scalars: [o.bound] });
        return { g2, m2, v2 };
      });
      for (const old of [grid, m, v]) old.dispose();
      grid = keep(next.g2);
      m = keep(next.m2);
      v = keep(next.v2);
    }
    // Score the last iterate too.
    tidy(() => {
      const { loss, logits } = lossValue(ofGrid, grid, y, negMargin, eot);
      keepBest(best, grid, loss, misclassified(logits, y));
    });
    const xAdv = noGrad(() => tidy(() => clip01(gridSample(x, best.x))));
    best.loss.dispose();
    best.misclassified.dispose();
    track(best.x); // owned by the caller's scope, like any op's output
    return { xAdv, grid: best.x };
  } catch (e) {
    disposeBest(best);
    throw e;
  } finally {
    for (const t of [identity, grid, m, v]) t.dispose();
  }
}

/** StAdv: the spatially transformed x_adv ∈ [0,1] (a new tensor the caller owns). */
export function stAdv(model: Model, x: Tensor, y: Tensor, options: StAdvOptions = {}): Tensor {
  const { xAdv, grid } = stAdvWithGrid(model, x, y, options);
  grid.dispose();
  return xAdv;
}
