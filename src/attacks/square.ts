/**
 * Square attack (Andriushchenko et al., ECCV 2020): a score-based black-box attack, random search
 * with square-shaped updates. It uses only the model's outputs, so it is the standard check for
 * gradient masking: if Square finds adversarial examples that PGD missed, the gradients lie.
 *
 *   x_best = init;  m_best = margin(x_best)                            (1 query)
 *   repeat queries − 1 times, for the samples still correctly classified (m_best > 0):
 *     s = side of the window for the current p (p halves on a fixed schedule)
 *     x_new = x_best with one random s×s window (per sample) replaced
 *     if margin(x_new) < m_best: x_best, m_best = x_new, margin(x_new)
 *
 * margin = z_y − max_{i≠y} z_i (marginLoss), averaged over `eot` forward passes per candidate for
 * random models. L∞: init = vertical stripes x + ε·σ (one sign per sample, channel and column);
 * a window gets clip(x + ε·σ_c) with one sign per channel (a proposal that would change nothing
 * is redrawn, like the original). L2: init = a 5×5 grid of "meta pseudo-Gaussian" bumps with
 * random signs, rescaled to norm ε; a proposal moves the budget of a second random window into
 * the first one, filled with the pattern plus its old content, then rescales δ to norm ε.
 *
 * GPU notes: window positions and signs are Philox draws in kernels (per sample, not one per
 * batch as in the original L2 code); acceptance is a per-sample select in a kernel; nothing is
 * read back. Positions are uniform over all s×s windows inside the image (the original's
 * randint(0, h − s) never reaches the last row and column). Kernels: shaders/square.ts.
 */
import {
  acceptImagesShader,
  acceptLossShader,
  l2ApplyShader,
  l2InitShader,
  l2ProposeShader,
  l2RescaleShader,
  l2StatsShader,
  linfApplyShader,
  linfInitShader,
  linfProposeShader,
  SAMPLE_WORKGROUP,
} from "../../shaders/square.ts";
import { currentGpu } from "../device/runtime.ts";
import { sub } from "../ops/arithmetic.ts";
import { fromArray } from "../ops/creation.ts";
import { mapElements } from "../ops/elementwise.ts";
import { checkLoopLength, CPU_ADAPTER_MAX_LOOP, grid1d, launch, output, params } from "../ops/kernel.ts";
import { defaultGenerator } from "../ops/random.ts";
import { keep, tidy, track } from "../tensor/scope.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { lossValue } from "./gradient.ts";
import { marginLoss } from "./losses.ts";
import { perSampleNorm } from "./projection.ts";
import type { Model, ThreatModel } from "./types.ts";

export interface SquareOptions {
  /** Forward passes (× eot) per sample, the initial one included (default 5000). */
  queries?: number;
  /** Initial fraction of the image a window covers (default 0.8). */
  pInit?: number;
  /** Forward passes averaged per candidate, for random models (default 1). */
  eot?: number;
  /** Seed of the proposals (default: a fresh stream of the default generator). */
  seed?: number;
  /**
   * Rescale the p schedule to the budget (iteration it counts as it·10000/queries), as square.py
   * does by default. Off by default, as in AutoAttack (resc_schedule=False) and ATTACKS.md: p
   * halves after iterations 10, 50, 200, ... whatever the budget.
   */
  rescaleSchedule?: boolean;
}

/** Redraws of an L∞ proposal that would not change x_best (GPU adapters; fewer on CPU, see below). */
const MAX_ATTEMPTS = 10;

/**
 * The fraction p of the image a window covers at iteration `it` (0-based) of `queries`:
 * pInit halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000, or (`rescale`)
 * after those of a 10,000-query run rescaled to the budget (it·10000/queries).
 */
export function squareP(pInit: number, it: number, queries: number, rescale = false): number {
  const i = rescale ? Math.floor(it / queries * 10000) : it;
  const halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000].filter((t) => i > t).length;
  return pInit / 2 ** halvings;
}

/**
 * The L2 window pattern of side s (the original's meta_pseudo_gaussian_pert): the top half a
 * stack of nested rectangles weighted 1/(k+1)², the bottom half the same negated, unit norm.
 */
export function metaPseudoGaussian(s: number): Float64Array {
  const rectangles = (rows: number, cols: number): Float64Array => {
    const d = new Float64Array(rows * cols);
    if (rows === 0) return d;
    const rc = Math.floor(rows / 2) + 1, cc = Math.floor(cols / 2) + 1;
    let r0 = rc - 1, c0 = cc - 1;
    for (let k = 0; k < Math.max(rc, cc); k++) {
      for (let i = Math.max(r0, 0); i < Math.min(r0 + 2 * k + 1, rows); i++) {
        for (let j = Math.max(c0, 0); j < Math.min(c0 + 2 * k + 1, cols); j++) {
          d[i * cols + j] += 1 / (k + 1) ** 2;
        }
      }
      r0--;
      c0--;
    }
    return unitNorm(d);
  };
  const top = Math.floor(s / 2);
  const out = new Float64Array(s * s);
  out.set(rectangles(top, s));
  out.set(rectangles(s - top, s).map((v) => -v), top * s);
  return unitNorm(out);
}

function unitNorm(d: Float64Array): Float64Array {
  const norm = Math.sqrt(d.reduce((a, v) => a + v * v, 0));
  return norm > 0 ? d.map((v) => v / norm) : d;
}

function checkInputs(x: Tensor, y: Tensor, threat: ThreatModel, queries: number, pInit: number): void {
  const op = "square";
  if (x.rank !== 4 || x.dtype !== "f32") {
    throw new ShapeError(op, `expects x f32 [N, C, H, W], got ${x.describe()}`);
  }
  if (y.dtype !== "i32" || y.rank !== 1 || y.shape[0] !== x.shape[0]) {
    throw new ShapeError(op, `expects labels i32 [${x.shape[0]}], got ${y.describe()}`);
  }
  if (x.shape[1] > 32) {
    throw new ShapeError(op, `supports up to 32 channels (one sign bit each), got ${fmt(x.shape)}`);
  }
  if (x.shape[2] < 1 || x.shape[3] < 1) throw new ShapeError(op, `empty images ${fmt(x.shape)}`);
  if (!Number.isFinite(threat.eps) || threat.eps < 0) {
    throw new RangeError(`${op}: eps must be finite and >= 0`);
  }
  if (threat.norm !== "linf" && threat.norm !== "l2") {
    throw new RangeError(`${op}: unknown norm '${threat.norm}'`);
  }
  if (!Number.isInteger(queries) || queries < 1) {
    throw new RangeError(`${op}: queries must be an integer >= 1, got ${queries}`);
  }
  if (!(pInit > 0 && pInit <= 1)) throw new RangeError(`${op}: pInit must be in (0, 1], got ${pInit}`);
}

/**
 * Square attack: x_adv (a new tensor the caller owns) with ‖x_adv − x‖ ≤ ε in the threat's norm
 * and x_adv ∈ [0,1]. Cost: `queries` forward passes × eot (one batch each), plus one of x (to leave
 * points that are already misclassified alone).
 */
export function square(
  model: Model,
  x: Tensor,
  y: Tensor,
  threat: ThreatModel,
  options: SquareOptions = {},
): Tensor {
  const queries = options.queries ?? 5000, pInit = options.pInit ?? 0.8, eot = options.eot ?? 1;
  checkInputs(x, y, threat, queries, pInit);
  const [n, c, h, w] = x.shape;
  const { seed, stream } = options.seed === undefined
    ? defaultGenerator.next()
    : { seed: options.seed, stream: 0 };
  const eps = threat.eps;
  const cpu = currentGpu().adapterClass === "cpu";
  const seedWords = [stream >>> 0, seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0];
  /** The uniform block every kernel of shaders/square.ts reads. */
  const block = (total: number, side = 1, iteration = 0, attempts = 1, patternSide = 1) =>
    params().u32(total, c, h, w, side, iteration, attempts, ...seedWords).f32(eps).u32(patternSide);
  const margin = (candidate: Tensor) => lossValue(model, candidate, y, marginLoss, { eot }).loss;
  const perSample = (count: number) => grid1d(count, SAMPLE_WORKGROUP);
  // Patterns of the L2 windows, one upload per side length (the side changes ~10 times).
  const patterns = new Map<number, Tensor>();
  const patternOf = (s: number) => {
    let t = patterns.get(s);
    if (!t) patterns.set(s, t = keep(fromArray(Float32Array.from(metaPseudoGaussian(s)), [s, s])));
    return t;
  };

  const xBest = keep(output("square", x.shape));
  const proposal = keep(output("square", [n, 8], "u32"));
  let lossMin: Tensor | null = null;
  try {
    tidy(() => {
      if (threat.norm === "linf") {
        launch("square.init", linfInitShader, [x, xBest, block(x.size)], grid1d(x.size));
      } else {
        const side = Math.max(1, Math.floor(Math.min(h, w) / 5));
        const delta = output("square.init", x.shape);
        launch(
          "square.init",
          l2InitShader,
          [patternOf(side), delta, block(x.size, side, 0, 1, side)],
          grid1d(x.size),
        );
        const norm = perSampleNorm(delta, "l2");
        launch("square.init", l2RescaleShader, [x, delta, norm, xBest, block(x.size)], grid1d(x.size));
      }
    });
    lossMin = keep(tidy(() => margin(xBest)));
    // Points the model already misclassifies are not attacked (the original runs on the correctly
    // classified ones only): x itself is offered as a candidate whose loss counts only if it is
    // fooled (margin <= 0), so those samples keep x (unless the init fooled them too) and freeze.
    tidy(() => {
      const clean = mapElements("square.clean", "select(3.0e38, a, a <= 0.0)", [margin(x)]);
      launch("square.accept", acceptImagesShader, [x, clean, lossMin!, xBest, block(x.size)], grid1d(x.size));
      launch("square.accept", acceptLossShader, [clean, lossMin!, block(n)], grid1d(n));
    });

    for (let it = 0; it < queries - 1; it++) {
      const p = squareP(pInit, it, queries, options.rescaleSchedule ?? false);
      tidy(() => {
        let xNew: Tensor;
        if (threat.norm === "linf") {
          const s = Math.min(Math.max(Math.round(Math.sqrt(p * h * w)), 1), Math.max(Math.min(h, w) - 1, 1));
          // On CPU adapters each redraw check loops over the C·s² window: keep the total under
          // llvmpipe's loop limit (fewer redraws for huge windows, which rarely need any).
          const attempts = cpu
            ? Math.max(1, Math.min(MAX_ATTEMPTS, Math.floor(CPU_ADAPTER_MAX_LOOP / (c * s * s + 1))))
            : MAX_ATTEMPTS;
          launch(
            "square.propose",
            linfProposeShader,
            [x, xBest, lossMin!, proposal, block(n, s, it, attempts)],
            perSample(n),
          );
          xNew = output("square", x.shape);
          launch(
            "square.apply",
            linfApplyShader,
            [x, xBest, lossMin!, proposal, xNew, block(x.size, s)],
            grid1d(x.size),
          );
        } else {
          let s = Math.max(Math.round(Math.sqrt(p * h * w)), 3);
          if (s % 2 === 0) s++;
          s = Math.min(s, h, w);
          checkLoopLength("square", 3 * s * s, `the L2 window statistics for ${s}x${s} windows`);
          const pattern = patternOf(s);
          launch("square.propose", l2ProposeShader, [proposal, block(n, s, it)], perSample(n));
          const imageNorm = perSampleNorm(sub(xBest, x), "l2");
          const stats = output("square.stats", [n * c, 2]);
          launch(
            "square.stats",
            l2StatsShader,
            [x, xBest, imageNorm, proposal, pattern, stats, block(n * c, s, it, 1, s)],
            perSample(n * c),
          );
          const delta = output("square.apply", x.shape);
          launch(
            "square.apply",
            l2ApplyShader,
            [x, xBest, lossMin!, proposal, pattern, stats, delta, block(x.size, s, it, 1, s)],
            grid1d(x.size),
          );
          const norm = perSampleNorm(delta, "l2");
          xNew = output("square", x.shape);
          launch("square.apply", l2RescaleShader, [x, delta, norm, xNew, block(x.size)], grid1d(x.size));
        }
        const loss = margin(xNew);
        // Images first: they compare against the old loss_min, which the second kernel updates.
        launch(
          "square.accept",
          acceptImagesShader,
          [xNew, loss, lossMin!, xBest, block(x.size)],
          grid1d(x.size),
        );
        launch("square.accept", acceptLossShader, [loss, lossMin!, block(n)], grid1d(n));
      });
    }
  } catch (e) {
    xBest.dispose();
    throw e;
  } finally {
    lossMin?.dispose();
    proposal.dispose();
    for (const t of patterns.values()) t.dispose();
  }
  track(xBest); // owned by the caller's scope, like any op's output
  return xBest;
}
