/**
 * The geometry of the threat models, on the GPU: steps, projections onto
 * {x : ‖x − x0‖ ≤ ε} ∩ [0,1]^D, random starts, per-sample norms, and the per-sample
 * bookkeeping (masked copies, keep-best) that replaces host-side `if`s, since attacks never
 * read back. Kernels: shaders/attack.ts. Every function takes batches [N, ...] (sample n is the
 * n-th block of D = size/N contiguous elements) and records no gradient.
 */
import {
  clip01Shader,
  keepBestCopyShader,
  keepBestStatsShader,
  l2ApplyShader,
  l2DeltaShader,
  projectLinfShader,
  randomStartShader,
  selectPerSampleShader,
  signStepShader,
} from "../../shaders/attack.ts";
import { rsubScalar } from "../ops/arithmetic.ts";
import { checkFloat } from "../ops/elementwise.ts";
import { fillBits, grid1d, type KernelBinding, launch, output, params } from "../ops/kernel.ts";
import { correctPredictions } from "../ops/metrics.ts";
import { rand, randn } from "../ops/random.ts";
import { reduceAxes } from "../ops/reduce_axes.ts";
import { keep } from "../tensor/scope.ts";
import { fmt, sameShape, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { Norm, ThreatModel } from "./types.ts";

/** A step size for the whole batch, or one per sample (f32 [N], e.g. APGD's eta). */
export type StepSize = number | Tensor;

// ---- checks and dispatch ----------------------------------------------------------------------

function batchOf(op: string, x: Tensor): { n: number; d: number } {
  checkFloat(op, x);
  if (x.rank < 1 || x.shape[0] === 0) {
    throw new ShapeError(op, `expects a non-empty batch [N, ...], got ${fmt(x.shape)}`);
  }
  return { n: x.shape[0], d: x.size / x.shape[0] };
}

function checkSame(op: string, what: string, a: Tensor, b: Tensor): void {
  checkFloat(op, b);
  if (!sameShape(a.shape, b.shape)) {
    throw new ShapeError(op, `${what} has shape ${fmt(b.shape)}, expected ${fmt(a.shape)} like x`);
  }
}

function checkPerSample(op: string, what: string, t: Tensor, n: number): void {
  checkFloat(op, t);
  if (t.size !== n) {
    throw new ShapeError(op, `${what} must hold one value per sample ([${n}]), got ${fmt(t.shape)}`);
  }
}

function checkRadius(op: string, eps: number): void {
  if (!Number.isFinite(eps) || eps < 0) {
    throw new RangeError(`${op}: eps must be finite and >= 0, got ${eps}`);
  }
}

function checkStep(op: string, alpha: StepSize, n: number): void {
  if (typeof alpha === "number") {
    if (!Number.isFinite(alpha)) throw new RangeError(`${op}: step size must be finite, got ${alpha}`);
  } else checkPerSample(op, "the step size", alpha, n);
}

/** Runs a per-element kernel of shaders/attack.ts over x's batch into a new tensor. */
function perElement(
  op: string,
  source: string,
  inputs: KernelBinding[],
  like: Tensor,
  alpha = 0,
  eps = 0,
): Tensor {
  const { d } = batchOf(op, like);
  const out = output(op, like.shape);
  launch(op, source, [...inputs, out, params().u32(like.size, d).f32(alpha, eps)], grid1d(like.size));
  return out;
}

// ---- per-sample norms -----------------------------------------------------------------------------

/**
 * ‖d_n‖ per sample, f32 [N]: sqrt(Σ d²) for "l2", max |d| for "linf". A deterministic
 * reduction that splits long samples into chunks (no invocation loops past llvmpipe's limit).
 */
export function perSampleNorm(d: Tensor, norm: Norm): Tensor {
  const op = "perSampleNorm";
  const { n, d: per } = batchOf(op, d);
  const rows = d.alias([n, per]);
  try {
    return norm === "l2"
      ? reduceAxes(op, "sum", rows, [1], false, 1, { load: "v * v", store: "sqrt(acc)" })
      : reduceAxes(op, "max", rows, [1], false, 1, { load: "abs(v)" });
  } finally {
    rows.dispose();
  }
}

/** ‖a_n − b_n‖ per sample, f32 [N] (the size of a perturbation). */
export function perSampleDistance(a: Tensor, b: Tensor, norm: Norm): Tensor {
  const op = "perSampleDistance";
  batchOf(op, a);
  checkSame(op, "b", a, b);
  const delta = perElement(op, l2DeltaShader(false, false), [a, b], a);
  const out = perSampleNorm(delta, norm);
  delta.dispose();
  return out;
}

// ---- projections and steps ------------------------------------------------------------------------

/** clamp(x, 0, 1). */
export function clip01(x: Tensor): Tensor {
  batchOf("clip01", x);
  return perElement("clip01", clip01Shader, [x], x);
}

/** Projection onto the L∞ ball around x0 intersected with the box: clamp(x_adv, max(x0−ε,0), min(x0+ε,1)). */
export function projectLinf(xAdv: Tensor, x0: Tensor, eps: number): Tensor {
  const op = "projectLinf";
  batchOf(op, xAdv);
  checkSame(op, "x0", xAdv, x0);
  checkRadius(op, eps);
  return perElement(op, projectLinfShader, [xAdv, x0], xAdv, 0, eps);
}

/** Scales δ = x_adv − x0 to the L2 ball (δ·min(1, ε/‖δ‖) per sample), then clips to [0,1]. */
export function projectL2(xAdv: Tensor, x0: Tensor, eps: number): Tensor {
  const op = "projectL2";
  batchOf(op, xAdv);
  checkSame(op, "x0", xAdv, x0);
  checkRadius(op, eps);
  const delta = perElement(op, l2DeltaShader(false, false), [xAdv, x0], xAdv);
  return applyL2(op, x0, delta, eps);
}

/** Finishes an L2 projection of δ (disposed here): clamp(x0 + δ·min(1, ε/‖δ‖), 0, 1). */
function applyL2(op: string, x0: Tensor, delta: Tensor, eps: number): Tensor {
  const norm = perSampleNorm(delta, "l2");
  const out = perElement(op, l2ApplyShader, [x0, delta, norm], x0, 0, eps);
  norm.dispose();
  delta.dispose();
  return out;
}

/** Projection for a threat model. */
export function project(xAdv: Tensor, x0: Tensor, threat: ThreatModel): Tensor {
  return threat.norm === "linf" ? projectLinf(xAdv, x0, threat.eps) : projectL2(xAdv, x0, threat.eps);
}

/**
 * L∞ step with projection, one kernel: clamp(x + α·sign(g), max(x0−ε,0), min(x0+ε,1)).
 * α is a number or a per-sample tensor [N].
 */
export function signStep(x: Tensor, g: Tensor, alpha: StepSize, x0: Tensor, eps: number): Tensor {
  const op = "signStep";
  const { n } = batchOf(op, x);
  checkSame(op, "the gradient", x, g);
  checkSame(op, "x0", x, x0);
  checkStep(op, alpha, n);
  checkRadius(op, eps);
  const perSample = typeof alpha !== "number";
  const inputs = perSample ? [x, g, x0, alpha] : [x, g, x0];
  return perElement(op, signStepShader(perSample), inputs, x, perSample ? 0 : alpha, eps);
}

/**
 * L2 step with projection: x' = x + α·g/(‖g‖+1e-12), then δ = x' − x0 scaled by
 * min(1, ε/‖δ‖), then clip to [0,1]. Two per-sample norms, so four launches plus reductions.
 */
export function l2Step(x: Tensor, g: Tensor, alpha: StepSize, x0: Tensor, eps: number): Tensor {
  const op = "l2Step";
  const { n } = batchOf(op, x);
  checkSame(op, "the gradient", x, g);
  checkSame(op, "x0", x, x0);
  checkStep(op, alpha, n);
  checkRadius(op, eps);
  const perSample = typeof alpha !== "number";
  const gNorm = perSampleNorm(g, "l2");
  const inputs = perSample ? [x, g, x0, gNorm, alpha] : [x, g, x0, gNorm];
  const delta = perElement(op, l2DeltaShader(true, perSample), inputs, x, perSample ? 0 : alpha);
  gNorm.dispose();
  return applyL2(op, x0, delta, eps);
}

/** The projected step of a threat model (signStep for L∞, l2Step for L2). */
export function step(x: Tensor, g: Tensor, alpha: StepSize, x0: Tensor, threat: ThreatModel): Tensor {
  return threat.norm === "linf" ? signStep(x, g, alpha, x0, threat.eps) : l2Step(x, g, alpha, x0, threat.eps);
}

// ---- random starts ------------------------------------------------------------------------------

export interface RandomStartOptions {
  /**
   * L∞ only. "pgd" (default): x + U(−ε, ε) elementwise (Madry et al.);
   * "apgd": x + ε·u/max|u| with u ~ U(−1, 1) (AutoAttack's APGD init: some coordinate at ±ε).
   * L2 always takes a Gaussian direction scaled to norm ε.
   */
  style?: "pgd" | "apgd";
  /** Philox stream (e.g. the restart index) when `seed` is given; default 0. */
  stream?: number;
}

/**
 * A random point of the threat ball around x, clipped to [0,1]. With `seed` the draw is
 * reproducible (Philox (seed, stream)); without, the default generator hands out a fresh one.
 */
export function randomStart(
  x: Tensor,
  threat: ThreatModel,
  seed?: number,
  options: RandomStartOptions = {},
): Tensor {
  const op = "randomStart";
  batchOf(op, x);
  checkRadius(op, threat.eps);
  const draw = seed === undefined ? {} : { seed, stream: options.stream ?? 0 };
  const eps = threat.eps;
  if (threat.norm === "linf" && (options.style ?? "pgd") === "pgd") {
    const u = rand(x.shape, { ...draw, low: -eps, high: eps });
    const out = perElement(op, randomStartShader(false), [x, u], x);
    u.dispose();
    return out;
  }
  const u = threat.norm === "linf" ? rand(x.shape, { ...draw, low: -1, high: 1 }) : randn(x.shape, draw);
  const scale = perSampleNorm(u, threat.norm);
  const out = perElement(op, randomStartShader(true), [x, u, scale], x, 0, eps);
  u.dispose();
  scale.dispose();
  return out;
}

// ---- per-sample selection and keep-best -----------------------------------------------------------

/** Per sample: mask[n] ≠ 0 ? a_n : b_n (mask f32 [N], usually 0/1). */
export function selectPerSample(mask: Tensor, a: Tensor, b: Tensor): Tensor {
  const op = "selectPerSample";
  const { n } = batchOf(op, a);
  checkSame(op, "b", a, b);
  checkPerSample(op, "mask", mask, n);
  return perElement(op, selectPerSampleShader, [a, b, mask], a);
}

/** 1 where argmax(logits_n) ≠ y_n, else 0 (f32 [N]). */
export function misclassified(logits: Tensor, y: Tensor): Tensor {
  const correct = correctPredictions(logits, y);
  const out = rsubScalar(correct, 1);
  correct.dispose();
  return out;
}

/** The best iterate per sample so far, with its loss and misclassified flag (all owned). */
export interface BestIterate {
  x: Tensor;
  /** f32 [N]. */
  loss: Tensor;
  /** f32 [N], 1 if misclassified (−1 before the first update). */
  misclassified: Tensor;
}

/**
 * Empty keep-best state shaped like x (kept out of any tidy scope: dispose it with
 * `disposeBest`). The first `keepBest` call takes every sample.
 */
export function initBest(like: Tensor): BestIterate {
  const { n } = batchOf("initBest", like);
  const best = {
    x: keep(output("initBest", like.shape)),
    loss: keep(output("initBest", [n])),
    misclassified: keep(output("initBest", [n])),
  };
  fillBits(best.loss, 0xff800000, "initBest"); // −∞
  fillBits(best.misclassified, 0xbf800000, "initBest"); // −1
  return best;
}

/**
 * Keep-best, in place: per sample, the iterate x_n replaces the best one when it is
 * misclassified and the best is not, or both agree and its loss is higher. So each sample
 * ends with its highest-loss iterate, or, once any iterate was misclassified, a misclassified
 * one (the highest-loss among those).
 */
export function keepBest(best: BestIterate, x: Tensor, loss: Tensor, mis: Tensor): void {
  const op = "keepBest";
  const { n, d } = batchOf(op, x);
  checkSame(op, "the best iterate", x, best.x);
  checkPerSample(op, "loss", loss, n);
  checkPerSample(op, "the misclassified flags", mis, n);
  // The copy reads the old best loss/flag, so it runs before they are updated.
  launch(
    op,
    keepBestCopyShader,
    [x, loss, mis, best.loss, best.misclassified, best.x, params().u32(x.size, d).f32(0, 0)],
    grid1d(x.size),
  );
  launch(
    op,
    keepBestStatsShader,
    [loss, mis, best.loss, best.misclassified, params().u32(n, 1).f32(0, 0)],
    grid1d(n),
  );
}

export function disposeBest(best: BestIterate): void {
  best.x.dispose();
  best.loss.dispose();
  best.misclassified.dispose();
}
