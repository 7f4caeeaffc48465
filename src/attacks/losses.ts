/**
 * Per-sample attack losses on logits [N, K] with labels y (i32 [N]); each returns f32 [N] and is
 * differentiable with respect to the logits (an analytic gradient rule per kernel, see
 * shaders/attack_losses.ts). Gradient attacks maximise CE and DLR:
 *
 *   perSampleCrossEntropy  log sum_i exp(z_i) - z_y
 *   marginLoss             z_y - max_{i != y} z_i                (negative: misclassified)
 *   dlrLoss                -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)          (K >= 3)
 *   targetedDlrLoss        -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12)           (K >= 4)
 *
 * with z_pi1 >= z_pi2 >= ... the sorted logits. DLR ("difference of logits ratio", Croce & Hein
 * 2020) divides the margin by a spread of the top logits, so it does not change when the logits
 * are scaled or shifted: a defence cannot hide behind saturated softmax outputs the way it can
 * against cross-entropy. marginLoss is the quantity a Square attack drives below zero (note the
 * sign: it is a margin, so attacks minimise it). A label outside [0, K) gives NaN for its row.
 * kthLargestOtherClass picks APGD-T's target classes.
 */
import {
  type AttackLoss,
  attackLossBackwardShader,
  attackLossShader,
  kthTargetShader,
  ROW_WORKGROUP,
} from "../../shaders/attack_losses.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { checkFloat } from "../ops/elementwise.ts";
import { checkLoopLength, grid1d, launch, output, params } from "../ops/kernel.ts";
import { crossEntropy } from "../ops/loss.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** Cross-entropy of each row, f32 [N] (crossEntropy with reduction "none"). */
export function perSampleCrossEntropy(logits: Tensor, y: Tensor): Tensor {
  return crossEntropy(logits, y, { reduction: "none" });
}

/** z_y - max_{i != y} z_i per row, f32 [N] (K >= 2). */
export function marginLoss(logits: Tensor, y: Tensor): Tensor {
  return attackLoss("marginLoss", "margin", 2, logits, y);
}

/** -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12) per row, f32 [N] (K >= 3). */
export function dlrLoss(logits: Tensor, y: Tensor): Tensor {
  return attackLoss("dlrLoss", "dlr", 3, logits, y);
}

/** -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12) per row for target classes t (i32 [N]), K >= 4. */
export function targetedDlrLoss(logits: Tensor, y: Tensor, targets: Tensor): Tensor {
  return attackLoss("targetedDlrLoss", "dlr-targeted", 4, logits, y, targets);
}

function checkLabels(op: string, what: string, labels: Tensor, n: number, logits: Tensor): void {
  if (labels.dtype !== "i32" || labels.rank !== 1 || labels.shape[0] !== n) {
    throw new ShapeError(
      op,
      `${what} must be i32 [${n}] to match logits ${fmt(logits.shape)}, got ${labels.describe()}`,
    );
  }
}

function attackLoss(
  op: string,
  loss: AttackLoss,
  minClasses: number,
  logits: Tensor,
  y: Tensor,
  targets?: Tensor,
): Tensor {
  checkFloat(op, logits);
  if (logits.rank !== 2) {
    throw new ShapeError(op, `logits must be [N, K], got ${fmt(logits.shape)}; reshape to [N, K] first`);
  }
  const [n, k] = logits.shape;
  if (k < minClasses) {
    throw new ShapeError(
      op,
      `needs at least ${minClasses} classes, got logits ${fmt(logits.shape)} with K = ${k}` +
        (loss === "margin" ? "" : "; use perSampleCrossEntropy or marginLoss for fewer classes"),
    );
  }
  checkLabels(op, "labels", y, n, logits);
  if (targets) checkLabels(op, "targets", targets, n, logits);
  checkLoopLength(op, k, `each row of logits ${fmt(logits.shape)}`);
  const labels = targets ? [y, targets] : [y];

  const out = output(op, [n]);
  const roles = output(op, [n, 4], "u32"); // per row: m, pi1, pi3, pi4
  if (n > 0) {
    launch(
      op,
      attackLossShader(loss),
      [logits, ...labels, out, roles, params().u32(n, k)],
      grid1d(n, ROW_WORKGROUP),
    );
  }
  if (!needsGrad(logits)) {
    roles.dispose();
    return out;
  }
  return record(op, [logits, ...labels], out, (dy) => {
    const backward = `${op}.backward`;
    const dx = output(backward, logits.shape);
    if (n > 0) {
      launch(
        backward,
        attackLossBackwardShader(loss),
        [logits, ...labels, roles, dy, dx, params().u32(n * k, k)],
        grid1d(n * k),
      );
    }
    return [dx, ...labels.map(() => null)];
  });
}

/**
 * For each row, the class ranked `rank`-th (1 = most likely) among the classes other than y on
 * `logits` (ties: lower class first): APGD-T's target list. i32 [N]; -1 for rows with an invalid
 * label. Needs 1 <= rank <= K - 1. No gradient.
 */
export function kthLargestOtherClass(logits: Tensor, y: Tensor, rank: number): Tensor {
  const op = "kthLargestOtherClass";
  checkFloat(op, logits);
  if (logits.rank !== 2) throw new ShapeError(op, `logits must be [N, K], got ${fmt(logits.shape)}`);
  const [n, k] = logits.shape;
  checkLabels(op, "labels", y, n, logits);
  if (!Number.isInteger(rank) || rank < 1 || rank > k - 1) {
    throw new ShapeError(op, `rank must be an integer in [1, ${k - 1}] for K = ${k} classes, got ${rank}`);
  }
  checkLoopLength(op, k, `each row of logits ${fmt(logits.shape)}`);
  const out = output(op, [n], "i32");
  if (n > 0) launch(op, kthTargetShader, [logits, y, out, params().u32(n * k, k, rank - 1)], grid1d(n * k));
  return out;
}
