/**
 * Metrics on the GPU (no gradient): training accumulates them in tensors and reads them back
 * only every N steps.
 */
import { correctShader } from "../../shaders/metrics.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkLoopLength, grid1d, launch, output, params } from "./kernel.ts";
import { sum } from "./reduce.ts";

/** Per row: 1 if argmax(logits[i]) == labels[i] (first maximum on ties), else 0. f32 [N]. */
export function correctPredictions(logits: Tensor, labels: Tensor): Tensor {
  const op = "correctPredictions";
  if (logits.rank !== 2 || logits.dtype !== "f32") {
    throw new ShapeError(op, `logits must be f32 [N, K], got ${logits.describe()}`);
  }
  if (labels.dtype !== "i32" || labels.rank !== 1 || labels.shape[0] !== logits.shape[0]) {
    throw new ShapeError(
      op,
      `labels must be i32 [${logits.shape[0]}], got ${labels.describe()} for logits ${fmt(logits.shape)}`,
    );
  }
  const [rows, classes] = logits.shape;
  checkLoopLength(op, classes, `each row of logits ${fmt(logits.shape)}`);
  const out = output(op, [rows]);
  if (rows > 0) launch(op, correctShader, [logits, labels, out, params().u32(rows, classes)], grid1d(rows));
  return out;
}

/** Number of correctly classified rows, as an f32 scalar tensor. */
export function correctCount(logits: Tensor, labels: Tensor): Tensor {
  const perRow = correctPredictions(logits, labels);
  const total = sum(perRow);
  perRow.dispose();
  return total;
}
