/**
 * Losses and log-softmax, each a fused forward kernel (shaders/loss.ts) with its gradient rule.
 *
 *  logSoftmax(x)_j = x_j - log sum_k exp(x_k)          d/dx: dx = dy - softmax(x) * sum(dy)
 *  crossEntropy(x, label) = log sum_k exp(x_k) - x_label d/dx: (softmax(x) - onehot(label)) * dy
 *  mseLoss(a, b)  = (a - b)^2                          d/da: 2 (a - b) dy,   d/db = -d/da
 *  l1Loss(a, b)   = |a - b|                            d/da: sign(a - b) dy, d/db = -d/da
 *
 * Reductions follow PyTorch: "mean" (default) divides the sum by the number of terms (rows for
 * cross-entropy, elements otherwise), "sum" adds them, "none" returns the per-term values.
 */
import {
  crossEntropyBackwardShader,
  crossEntropyShader,
  logSoftmaxBackwardShader,
  logSoftmaxShader,
  type PointwiseLoss,
  pointwiseLossBackwardShader,
  ROW_LANES,
  type RowVariant,
  SUM_LANES,
  sumShader,
} from "../../shaders/loss.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { currentGpu } from "../device/runtime.ts";
import { fmt, normAxis, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { assertSameShape, checkFloat, mapElements } from "./elementwise.ts";
import { checkLoopLength, grid1d, launch, output, params } from "./kernel.ts";

export type Reduction = "mean" | "none" | "sum";

export interface LossOptions {
  /** "mean" (default), "sum", or "none" (one value per term). */
  reduction?: Reduction;
}

/**
 * Tunables of the loss kernels (tests force each choice).
 * - `rowVariant`: how a softmax row is reduced. "auto": one invocation per row on CPU adapters
 *   (llvmpipe; measured 2-5x faster there for K = 10 and K = 1000), one workgroup per row on
 *   real GPUs.
 * - `sumGroups`: most workgroups in the first pass of a sum-to-scalar (0: 16 on CPU adapters,
 *   where each workgroup's barriers are costly, 256 on GPUs).
 */
export const lossTunables: { rowVariant: "auto" | RowVariant; sumGroups: number } = {
  rowVariant: "auto",
  sumGroups: 0,
};

function rowVariant(): RowVariant {
  if (lossTunables.rowVariant !== "auto") return lossTunables.rowVariant;
  return currentGpu().adapterClass === "cpu" ? "thread" : "workgroup";
}

/** Workgroup grid for a row kernel over `rows` rows. */
function rowGrid(variant: RowVariant, rows: number): [number, number] {
  return variant === "workgroup" ? grid1d(rows, 1) : grid1d(rows, ROW_LANES);
}

function checkReduction(op: string, reduction: string): Reduction {
  if (reduction !== "mean" && reduction !== "sum" && reduction !== "none") {
    throw new ShapeError(op, `reduction must be "mean", "sum" or "none", got ${JSON.stringify(reduction)}`);
  }
  return reduction;
}

/**
 * scale * sum over i of term(a_i, b_i), as a scalar tensor [] (deterministic two-pass
 * reduction; see sumShader). No autograd.
 */
export function sumTerms(op: string, term: PointwiseLoss, inputs: Tensor[], scale: number): Tensor {
  const n = inputs[0].size;
  const out = output(op, []);
  const maxGroups = lossTunables.sumGroups || (currentGpu().adapterClass === "cpu" ? 16 : SUM_LANES);
  const groups = Math.min(maxGroups, Math.ceil(n / (SUM_LANES * 8)));
  if (groups <= 1) {
    launch(op, sumShader(term), [...inputs, out, params().u32(n).f32(scale)], [1]);
    return out;
  }
  const partial = output(op, [groups]);
  launch(op, sumShader(term), [...inputs, partial, params().u32(n).f32(1)], [groups]);
  launch(op, sumShader("identity"), [partial, out, params().u32(groups).f32(scale)], [1]);
  partial.dispose();
  return out;
}

/** Log-softmax along `axis` (default: the last), computed stably. */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  const op = "logSoftmax";
  checkFloat(op, x);
  if (x.rank === 0) throw new ShapeError(op, `needs a tensor with at least one axis, got ${fmt(x.shape)}`);
  const a = normAxis(op, axis, x.rank);
  const k = x.shape[a];
  checkLoopLength(op, k, `axis ${axis} of ${fmt(x.shape)}`);
  const inner = x.shape.slice(a + 1).reduce((s, d) => s * d, 1);
  const rows = k === 0 ? 0 : x.size / k;
  const rowParams = params().u32(rows, k, Math.max(inner, 1), 0);
  const variant = rowVariant();
  const y = output(op, x.shape);
  if (rows > 0) launch(op, logSoftmaxShader(variant), [x, y, rowParams], rowGrid(variant, rows));
  return record(op, [x], y, (dy) => {
    const dx = output("logSoftmax.backward", x.shape);
    if (rows > 0) {
      launch(
        "logSoftmax.backward",
        logSoftmaxBackwardShader(variant),
        [y, dy, dx, rowParams],
        rowGrid(variant, rows),
      );
    }
    return [dx];
  });
}

export type CrossEntropyOptions = LossOptions;

/**
 * Softmax cross-entropy of logits [N, K] against integer class labels [N] (i32), as
 * torch.nn.functional.cross_entropy. A label outside [0, K) gives a NaN loss for its row (and
 * NaN gradients), so bad data shows up in the loss without a readback.
 */
export function crossEntropy(logits: Tensor, labels: Tensor, options: CrossEntropyOptions = {}): Tensor {
  const op = "crossEntropy";
  const reduction = checkReduction(op, options.reduction ?? "mean");
  checkFloat(op, logits);
  if (logits.rank !== 2) {
    throw new ShapeError(op, `logits must be [N, K], got ${fmt(logits.shape)}; reshape to [N, K] first`);
  }
  if (labels.dtype !== "i32") {
    throw new ShapeError(
      op,
      `labels must be i32 class indices, got ${labels.describe()}; create them with dtype "i32"`,
    );
  }
  const [n, k] = logits.shape;
  if (labels.rank !== 1 || labels.shape[0] !== n) {
    throw new ShapeError(
      op,
      `labels must be [${n}] to match logits ${fmt(logits.shape)}, got ${fmt(labels.shape)}`,
    );
  }
  if (k === 0) throw new ShapeError(op, `logits ${fmt(logits.shape)} have no classes (K = 0)`);
  checkLoopLength(op, k, `each row of logits ${fmt(logits.shape)}`);

  const variant = rowVariant();
  const rowLoss = output(op, [n]);
  const stats = output(op, [n, 2]); // per row: max m and log sum exp(x - m)
  if (n > 0) {
    launch(
      op,
      crossEntropyShader(variant),
      [logits, labels, rowLoss, stats, params().u32(n, k, 1, 0)],
      rowGrid(variant, n),
    );
  }
  const scale = reduction === "mean" ? 1 / n : 1;
  let out = rowLoss;
  if (reduction !== "none") {
    out = sumTerms(op, "identity", [rowLoss], scale);
    rowLoss.dispose();
  }
  if (!needsGrad(logits)) {
    stats.dispose();
    return out;
  }
  return record(op, [logits, labels], out, (dy) => {
    const dx = output("crossEntropy.backward", logits.shape);
    const p = params().u32(n * k, k, reduction === "none" ? 1 : 0).f32(scale);
    launch(
      "crossEntropy.backward",
      crossEntropyBackwardShader,
      [logits, labels, stats, dy, dx, p],
      grid1d(n * k),
    );
    return [dx, null];
  });
}

/** Shared body of the pointwise losses (same-shape a and b, no broadcasting). */
function pointwiseLoss(
  op: string,
  term: "squared" | "absolute",
  forward: string,
  a: Tensor,
  b: Tensor,
  options: LossOptions,
): Tensor {
  const reduction = checkReduction(op, options.reduction ?? "mean");
  checkFloat(op, a, b);
  assertSameShape(op, a, b);
  const scale = reduction === "mean" ? 1 / a.size : 1;
  const out = reduction === "none" ? mapElements(op, forward, [a, b]) : sumTerms(op, term, [a, b], scale);
  // Gradients are computed only for the inputs that need one (often b is a constant target).
  const wantA = needsGrad(a), wantB = needsGrad(b);
  return record(op, [a, b], out, (dy) => {
    const backward = `${op}.backward`;
    const gradient = (sign: number) => {
      const g = output(backward, a.shape);
      const p = params().u32(a.size, reduction === "none" ? 1 : 0).f32(sign * scale);
      launch(backward, pointwiseLossBackwardShader(term), [a, b, dy, g, p], grid1d(a.size));
      return g;
    };
    return [wantA ? gradient(1) : null, wantB ? gradient(-1) : null];
  });
}

/** Mean squared error (squared L2), as torch.nn.functional.mse_loss. Shapes must match. */
export function mseLoss(a: Tensor, b: Tensor, options: LossOptions = {}): Tensor {
  return pointwiseLoss("mseLoss", "squared", "(a - b) * (a - b)", a, b, options);
}

/** Mean absolute error, as torch.nn.functional.l1_loss; its gradient is 0 where a == b. */
export function l1Loss(a: Tensor, b: Tensor, options: LossOptions = {}): Tensor {
  return pointwiseLoss("l1Loss", "absolute", "abs(a - b)", a, b, options);
}
