/**
 * APGD (Auto-PGD, Croce & Hein 2020), the core of AutoAttack, for the linf and l2 threat models,
 * with the exact schedule of ATTACKS.md:
 *
 *   x_0 = random start (linf: clip01(x + eps·u/max|u|), u ~ U(-1,1); l2: a Gaussian direction of
 *         norm eps, clipped), eta_0 = 2·eps per sample
 *   z   = P(x_i + eta·dir(g_i))                       dir: sign(g) (linf), g/‖g‖ (l2)
 *   x_{i+1} = P(x_i + a(z − x_i) + (1 − a)(x_i − x_{i−1}))      a = 1 on the first step, then 0.75
 *
 * where P projects onto the eps-ball around x intersected with [0,1]^D. At checkpoints (after
 * iterations 22, 41, 57, 70, 80, 87, 93, 99 for 100 steps; see apgdCheckpoints) each sample
 * whose loss rose in at most rho·k of the last k steps, or whose eta was not halved last time
 * and whose best loss did not improve, halves eta and restarts from its best point x_best (with
 * the gradient there). The step size adapts per sample, so APGD needs no step-size tuning.
 *
 * Everything per sample (eta, loss counters, best loss, best point, flags) lives in GPU tensors
 * updated by kernels (shaders/apgd.ts and the helpers of projection.ts): the attack never reads
 * back, so it can run inside a training step. Iteration counts and the checkpoint schedule are
 * host constants.
 *
 * Returned per sample: a misclassified iterate if one was seen (the highest-loss one among them),
 * else the highest-loss iterate. AutoAttack returns the clean image for samples it did not fool;
 * the highest-loss point is a stronger starting candidate for re-evaluation (random defences).
 *
 * Differences from AutoAttack's code, both deliberate:
 *  - restarts run on every sample and keep-best merges them (AutoAttack restarts only the samples
 *    not yet fooled, which needs a readback); a fooled sample stays fooled;
 *  - "misclassified" uses the EOT-mean logits of the gradient calls (AutoAttack: the last draw).
 */
import { checkpointShader, observeLossShader, trackBestShader } from "../../shaders/apgd.ts";
import { noGrad } from "../autograd/tape.ts";
import { mapElements } from "../ops/elementwise.ts";
import { grid1d, launch, params } from "../ops/kernel.ts";
import { full } from "../ops/creation.ts";
import { keep, tidy } from "../tensor/scope.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { lossGradient, type PerSampleLoss } from "./gradient.ts";
import { dlrLoss, kthLargestOtherClass, perSampleCrossEntropy, targetedDlrLoss } from "./losses.ts";
import {
  type BestIterate,
  disposeBest,
  initBest,
  keepBest,
  misclassified,
  project,
  randomStart,
  selectPerSample,
  step,
} from "./projection.ts";
import type { GradientOptions, Model, ThreatModel } from "./types.ts";

export type ApgdLoss = "ce" | "dlr" | "dlr-targeted";

export interface ApgdOptions extends GradientOptions {
  /** "ce" (default), "dlr", or "dlr-targeted" (needs `targets`). */
  loss?: ApgdLoss;
  /** Target classes (i32 [N]) of the targeted DLR loss. */
  targets?: Tensor;
  /** Iterations per restart (default 100). */
  steps?: number;
  /** Random restarts, merged per sample by keep-best (default 1). */
  restarts?: number;
  /** Oscillation threshold: halve eta when the loss rose in at most rho·k of k steps (0.75). */
  rho?: number;
  /** First Philox stream of the random starts (restart r uses stream + r; default 0). */
  stream?: number;
}

/** Momentum weight of the first step and of every later one. */
const FIRST_MOMENTUM = 1.0;
const MOMENTUM = 0.75;
/** eta_0 = STEP_FACTOR · eps (AutoAttack's alpha = 2 for linf and l2). */
const STEP_FACTOR = 2;

/**
 * The iteration counts after which APGD checks its step sizes, for `steps` iterations:
 * windows of w1 = max(floor(0.22·steps), 1) iterations, each next one shorter by
 * max(floor(0.03·steps), 1), down to max(floor(0.06·steps), 1).
 * apgdCheckpoints(100) = [22, 41, 57, 70, 80, 87, 93, 99].
 */
export function apgdCheckpoints(steps: number): number[] {
  // Same arithmetic as AutoAttack's int(0.22 * n_iter) in double precision.
  let window = Math.max(Math.floor(0.22 * steps), 1);
  const shrink = Math.max(Math.floor(0.03 * steps), 1);
  const minWindow = Math.max(Math.floor(0.06 * steps), 1);
  const checks: number[] = [];
  let sinceCheck = 0;
  for (let i = 1; i <= steps; i++) {
    if (++sinceCheck === window) {
      checks.push(i);
      window = Math.max(window - shrink, minWindow);
      sinceCheck = 0;
    }
  }
  return checks;
}

/**
 * APGD's per-sample step-size schedule (see shaders/apgd.ts for the fields). `observe` after every
 * gradient evaluation, `check` at every checkpoint; `eta` is the current step size per sample
 * and `halved` the mask of the samples that restart from x_best after a check.
 */
export class ApgdStepSize {
  readonly eta: Tensor;
  readonly halved: Tensor;
  readonly lossBest: Tensor;
  readonly lossBestLastCheck: Tensor;
  readonly prevLoss: Tensor;
  readonly increases: Tensor;
  readonly samples: number;

  /** Starts from the loss at x_0 (f32 [N]) and step size eta0 for every sample. */
  constructor(initialLoss: Tensor, eta0: number) {
    const n = initialLoss.size;
    this.samples = n;
    this.eta = keep(full([n], eta0));
    this.halved = keep(full([n], 1));
    this.lossBest = keep(mapElements("apgd.init", "a", [initialLoss]));
    this.lossBestLastCheck = keep(mapElements("apgd.init", "a", [initialLoss]));
    // AutoAttack's first window compares the first loss with loss_steps[-1], a row of zeros
    // (Python's index -1 wraps to the unfilled end of the history): starting from 0 matches it.
    this.prevLoss = keep(full([n], 0));
    this.increases = keep(full([n], 0));
  }

  /** Records the loss of the new iterate (f32 [N]). */
  observe(loss: Tensor): void {
    this.#checkSamples("ApgdStepSize.observe", loss);
    launch(
      "apgd.observe",
      observeLossShader,
      [loss, this.lossBest, this.prevLoss, this.increases, params().u32(this.samples)],
      grid1d(this.samples),
    );
  }

  /** A checkpoint closing a window of `window` iterations: halves eta where the rule says so. */
  check(window: number, rho: number): void {
    launch(
      "apgd.checkpoint",
      checkpointShader,
      [
        this.lossBest,
        this.lossBestLastCheck,
        this.increases,
        this.halved,
        this.eta,
        params().u32(this.samples).f32(window, rho),
      ],
      grid1d(this.samples),
    );
  }

  dispose(): void {
    for (
      const t of [this.eta, this.halved, this.lossBest, this.lossBestLastCheck, this.prevLoss, this.increases]
    ) {
      t.dispose();
    }
  }

  #checkSamples(op: string, t: Tensor): void {
    if (t.size !== this.samples || t.dtype !== "f32") {
      throw new ShapeError(op, `expects f32 [${this.samples}] (one value per sample), got ${t.describe()}`);
    }
  }
}

/**
 * Where `loss` beats the schedule's best loss, copies x and grad into xBest and gradBest (in
 * place). Call before `schedule.observe(loss)`, which raises the best loss.
 */
export function trackBest(
  schedule: ApgdStepSize,
  x: Tensor,
  grad: Tensor,
  loss: Tensor,
  xBest: Tensor,
  gradBest: Tensor,
): void {
  const d = x.size / schedule.samples;
  launch(
    "apgd.trackBest",
    trackBestShader,
    [x, grad, loss, schedule.lossBest, xBest, gradBest, params().u32(x.size, d)],
    grid1d(x.size),
  );
}

/**
 * One APGD update with per-sample step sizes eta (f32 [N]) around the clean x0:
 *   z = P(x + eta·dir(g)),  x_next = P(x + a(z − x) + (1 − a)(x − xPrev)).
 */
export function momentumStep(
  x: Tensor,
  xPrev: Tensor,
  grad: Tensor,
  eta: Tensor,
  x0: Tensor,
  threat: ThreatModel,
  a: number,
): Tensor {
  return tidy(() => {
    const z = step(x, grad, eta, x0, threat);
    const m = mapElements("apgd.momentum", "a + s0 * (b - a) + (1.0 - s0) * (a - c)", [x, z, xPrev], {
      scalars: [a],
    });
    return project(m, x0, threat);
  });
}

function lossFunction(op: string, options: ApgdOptions, x: Tensor): PerSampleLoss {
  const loss = options.loss ?? "ce";
  switch (loss) {
    case "ce":
      return perSampleCrossEntropy;
    case "dlr":
      return dlrLoss;
    case "dlr-targeted": {
      const targets = options.targets;
      if (!targets || targets.dtype !== "i32" || targets.rank !== 1 || targets.shape[0] !== x.shape[0]) {
        throw new ShapeError(
          op,
          `loss "dlr-targeted" needs options.targets, i32 [${x.shape[0]}]; got ${
            targets ? targets.describe() : "none"
          }`,
        );
      }
      return (logits, y) => targetedDlrLoss(logits, y, targets);
    }
    default:
      throw new ShapeError(op, `loss must be "ce", "dlr" or "dlr-targeted", got ${JSON.stringify(loss)}`);
  }
}

/** The options one APGD run reads (the loss is resolved before). */
type RunOptions = Omit<ApgdOptions, "loss" | "targets">;

function checkArguments(op: string, x: Tensor, y: Tensor, threat: ThreatModel, options: RunOptions): void {
  if (x.dtype !== "f32" || x.rank < 2 || x.shape[0] === 0) {
    throw new ShapeError(op, `x must be a non-empty f32 batch [N, ...], got ${x.describe()}`);
  }
  if (y.dtype !== "i32" || y.rank !== 1 || y.shape[0] !== x.shape[0]) {
    throw new ShapeError(op, `y must be i32 [${x.shape[0]}] to match x ${fmt(x.shape)}, got ${y.describe()}`);
  }
  if (threat.norm !== "linf" && threat.norm !== "l2") {
    throw new ShapeError(op, `threat.norm must be "linf" or "l2", got ${JSON.stringify(threat.norm)}`);
  }
  if (!Number.isFinite(threat.eps) || threat.eps < 0) {
    throw new RangeError(`${op}: threat.eps must be finite and >= 0, got ${threat.eps}`);
  }
  for (
    const [name, value] of [["steps", options.steps ?? 100], ["restarts", options.restarts ?? 1]] as const
  ) {
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(
        `${op}: ${name} must be an integer >= 1, got ${value}`,
      );
    }
  }
  const rho = options.rho ?? 0.75;
  if (!(rho >= 0 && rho <= 1)) throw new RangeError(`${op}: rho must be in [0, 1], got ${rho}`);
}

/**
 * APGD with the CE, DLR or targeted DLR loss (options.loss), `restarts` runs of `steps`
 * iterations merged by keep-best. Returns x_adv (owned by the caller) with ‖x_adv − x‖ ≤ eps and
 * x_adv ∈ [0,1]. See the module comment for the schedule and the returned point.
 */
export function apgd(
  model: Model,
  x: Tensor,
  y: Tensor,
  threat: ThreatModel,
  options: ApgdOptions = {},
): Tensor {
  const op = "apgd";
  checkArguments(op, x, y, threat, options);
  const lossFn = lossFunction(op, options, x);
  const restarts = options.restarts ?? 1;
  let best: BestIterate | null = null;
  for (let r = 0; r < restarts; r++) {
    const run = apgdRun(model, x, y, threat, lossFn, options, (options.stream ?? 0) + r);
    if (!best) best = run;
    else {
      keepBest(best, run.x, run.loss, run.misclassified);
      disposeBest(run);
    }
  }
  best!.loss.dispose();
  best!.misclassified.dispose();
  return best!.x;
}

/** One APGD run from a random start; returns its keep-best state (owned by the caller). */
function apgdRun(
  model: Model,
  x: Tensor,
  y: Tensor,
  threat: ThreatModel,
  lossFn: PerSampleLoss,
  options: RunOptions,
  stream: number,
): BestIterate {
  const steps = options.steps ?? 100;
  const rho = options.rho ?? 0.75;
  const gradientOptions: GradientOptions = {
    eot: options.eot,
    averageLogits: options.averageLogits,
    surrogate: options.surrogate,
  };
  // Checkpoint -> the length of the window it closes.
  const windows = new Map<number, number>();
  apgdCheckpoints(steps).forEach((c, j, all) => windows.set(c, c - (j ? all[j - 1] : 0)));

  const best = initBest(x);
  // Evaluates the loss and gradient at `point` and updates the keep-best result.
  const evaluate = (point: Tensor) => {
    const r = lossGradient(model, point, y, lossFn, gradientOptions);
    tidy(() => keepBest(best, point, r.loss, misclassified(r.logits, y)));
    r.logits.dispose();
    return { grad: keep(r.grad), loss: keep(r.loss) };
  };

  let xCur = keep(noGrad(() => randomStart(x, threat, options.seed, { style: "apgd", stream })));
  let { grad, loss } = evaluate(xCur);
  const schedule = new ApgdStepSize(loss, STEP_FACTOR * threat.eps);
  loss.dispose();
  const copy = (t: Tensor) => keep(mapElements("apgd.copy", "a", [t]));
  const xBest = copy(xCur), gradBest = copy(grad);
  let xPrev = keep(xCur.alias()); // x_{-1} = x_0: no momentum on the first step (a = 1 anyway)

  for (let i = 0; i < steps; i++) {
    const a = i === 0 ? FIRST_MOMENTUM : MOMENTUM;
    const xNext = keep(momentumStep(xCur, xPrev, grad, schedule.eta, x, threat, a));
    xPrev.dispose();
    xPrev = xCur;
    xCur = xNext;
    grad.dispose();
    ({ grad, loss } = evaluate(xCur));
    trackBest(schedule, xCur, grad, loss, xBest, gradBest);
    schedule.observe(loss);
    loss.dispose();

    const window = windows.get(i + 1);
    if (window !== undefined) {
      schedule.check(window, rho);
      // Samples whose eta was just halved restart from their best point and its gradient.
      const restartX = keep(selectPerSample(schedule.halved, xBest, xCur));
      const restartGrad = keep(selectPerSample(schedule.halved, gradBest, grad));
      xCur.dispose();
      grad.dispose();
      xCur = restartX;
      grad = restartGrad;
    }
  }
  for (const t of [xCur, xPrev, grad, xBest, gradBest]) t.dispose();
  schedule.dispose();
  return best;
}

export interface ApgdTargetedOptions extends RunOptions {
  /** Number of target classes, the most likely non-true classes in turn (default min(9, K − 1)). */
  targets?: number;
}

/**
 * APGD-T: APGD with the targeted DLR loss, once for each of the `targets` most likely classes
 * other than y (ranked on the logits of x, one model call), merged per sample by keep-best
 * (a sample fooled for any target stays fooled). Needs K >= 4 classes.
 */
export function apgdT(
  model: Model,
  x: Tensor,
  y: Tensor,
  threat: ThreatModel,
  options: ApgdTargetedOptions = {},
): Tensor {
  const op = "apgdT";
  checkArguments(op, x, y, threat, options);
  const clean = tidy(() => noGrad(() => model(x))); // frees the model's intermediates
  const classes = clean.shape[1];
  if (clean.rank !== 2 || classes < 4) {
    clean.dispose();
    throw new ShapeError(
      op,
      `needs logits [N, K] with K >= 4 for the targeted DLR loss, got ${fmt(clean.shape)}`,
    );
  }
  const count = options.targets ?? Math.min(9, classes - 1);
  if (!Number.isInteger(count) || count < 1 || count > classes - 1) {
    clean.dispose();
    throw new RangeError(`${op}: targets must be an integer in [1, ${classes - 1}], got ${count}`);
  }
  let best: BestIterate | null = null;
  for (let k = 1; k <= count; k++) {
    const targets = kthLargestOtherClass(clean, y, k);
    const lossFn: PerSampleLoss = (logits, labels) => targetedDlrLoss(logits, labels, targets);
    const restarts = options.restarts ?? 1;
    for (let r = 0; r < restarts; r++) {
      // Streams differ per target and restart, so every run starts somewhere new.
      const stream = (options.stream ?? 0) + (k - 1) * restarts + r;
      const run = apgdRun(model, x, y, threat, lossFn, options, stream);
      if (!best) best = run;
      else {
        keepBest(best, run.x, run.loss, run.misclassified);
        disposeBest(run);
      }
    }
    targets.dispose();
  }
  clean.dispose();
  best!.loss.dispose();
  best!.misclassified.dispose();
  return best!.x;
}
