/**
 * Spatial sampling ops (kernels and the math in shaders/grid_sample.ts):
 *   gridSample(x, grid)     bilinear sampling of x [N, C, H, W] at grid [N, Ho, Wo, 2] (normalised
 *                           (x, y) in [−1, 1], zero padding, align_corners = false — torch's
 *                           F.grid_sample defaults), differentiable w.r.t. x and grid;
 *   identityGrid(n, h, w)   the grid that reproduces the image;
 *   flowSmoothness(flow)    StAdv's smoothness loss per sample, differentiable.
 */
import {
  flowSmoothnessBackwardShader,
  flowSmoothnessShader,
  gridDisplacementShader,
  gridSampleGridBackwardShader,
  gridSampleInputBackwardShader,
  gridSampleShader,
  identityGridShader,
} from "../../shaders/grid_sample.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { currentGpu } from "../device/runtime.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkFloat } from "./elementwise.ts";
import { checkLoopLength, CPU_ADAPTER_MAX_LOOP, fillBits, grid1d, launch, output, params } from "./kernel.ts";
import { max, min, sum } from "./reduce.ts";

export interface GridSampleOptions {
  /** Value of taps outside the image: only "zeros" (torch's default) is supported. */
  padding?: "zeros";
}

/**
 * out[n, c, ho, wo] = x[n, c] bilinearly sampled at grid[n, ho, wo] = (gx, gy), where
 * gx = −1 / +1 are the left / right edges of the image (pixel centres at (2i + 1)/W − 1), taps
 * outside the image read 0. Output [N, C, Ho, Wo].
 *
 * Gradient w.r.t. x is a deterministic gather whose cost per input pixel grows with the spread
 * of the displacements (sample position − identity position) within an image: about
 * (spread + 3)² candidate outputs per pixel, cheap for smooth flows, translations and small
 * affine jitter, O(Ho·Wo) for wild grids (see shaders/grid_sample.ts).
 */
export function gridSample(x: Tensor, grid: Tensor, options: GridSampleOptions = {}): Tensor {
  const op = "gridSample";
  checkFloat(op, x, grid);
  if ((options.padding ?? "zeros") !== "zeros") {
    throw new ShapeError(op, `padding "${options.padding}" is not supported; use "zeros"`);
  }
  if (x.rank !== 4) throw new ShapeError(op, `expects x of shape [N, C, H, W], got ${fmt(x.shape)}`);
  if (grid.rank !== 4 || grid.shape[3] !== 2 || grid.shape[0] !== x.shape[0]) {
    throw new ShapeError(
      op,
      `expects grid of shape [N, Ho, Wo, 2] with N = ${x.shape[0]} (x ${fmt(x.shape)}), got ${
        fmt(grid.shape)
      }`,
    );
  }
  const [n, c, h, w] = x.shape;
  const [, outH, outW] = grid.shape;
  if (h === 0 || w === 0) throw new ShapeError(op, `cannot sample empty images ${fmt(x.shape)}`);
  const sizes = (total: number, rowBegin = 0, rowEnd = outH, accumulate = 0) =>
    params().u32(total, c, h, w, outH, outW, rowBegin, rowEnd, accumulate);
  const out = output(op, [n, c, outH, outW]);
  if (out.size > 0) launch(op, gridSampleShader, [x, grid, out, sizes(out.size)], grid1d(out.size));
  // Decide now which gradients are wanted (the rule runs later, outside any recording scope).
  const wantX = needsGrad(x), wantGrid = needsGrad(grid);
  if (!wantX && !wantGrid) return out;
  return record(op, [x, grid], out, (dy) => {
    let dgrid: Tensor | null = null;
    if (wantGrid) {
      checkLoopLength(`${op}.backward`, c, `the channel dimension of x ${fmt(x.shape)}`);
      dgrid = output(`${op}.backward`, grid.shape);
      const points = n * outH * outW;
      if (points > 0) {
        launch(
          `${op}.backward`,
          gridSampleGridBackwardShader,
          [x, grid, dy, dgrid, sizes(points)],
          grid1d(points),
        );
      }
    }
    return [wantX ? gridSampleInputGradient(x, grid, dy) : null, dgrid];
  });
}

/** d out / d x: the gather described in shaders/grid_sample.ts. */
function gridSampleInputGradient(x: Tensor, grid: Tensor, dy: Tensor): Tensor {
  const op = "gridSample.backward";
  const [n, c, h, w] = x.shape;
  const [, outH, outW] = grid.shape;
  const dx = output(op, x.shape);
  if (dx.size === 0) return dx;
  if (outH * outW === 0) {
    fillBits(dx, 0, op); // no outputs: no gradient reaches x
    return dx;
  }
  // Displacement bounds per image and axis, [N, 2] each (x, y), over the samples that touch it.
  const points = n * outH * outW;
  const upper = output(op, [n, outH * outW, 2]), lower = output(op, [n, outH * outW, 2]);
  const p0 = params().u32(points, c, h, w, outH, outW, 0, 0, 0);
  launch(op, gridDisplacementShader, [grid, upper, lower, p0], grid1d(points));
  const dHi = max(upper, { axes: 1 }), dLo = min(lower, { axes: 1 });
  upper.dispose();
  lower.dispose();
  // Split the output rows into passes so that, on CPU adapters, no invocation loops more than
  // CPU_ADAPTER_MAX_LOOP times (the window can in the worst case cover every output).
  const cpu = currentGpu().adapterClass === "cpu";
  checkLoopLength(op, outW + 1, `a row of the grid ${fmt(grid.shape)}`);
  const band = cpu ? Math.max(1, Math.floor(CPU_ADAPTER_MAX_LOOP / (outW + 1))) : outH;
  const invocations = n * Math.ceil(c / 4) * h * w;
  for (let begin = 0; begin < outH; begin += band) {
    const end = Math.min(outH, begin + band);
    const p = params().u32(invocations, c, h, w, outH, outW, begin, end, begin > 0 ? 1 : 0);
    launch(op, gridSampleInputBackwardShader, [grid, dy, dHi, dLo, dx, p], grid1d(invocations));
  }
  dHi.dispose();
  dLo.dispose();
  return dx;
}

/**
 * The identity sampling grid [N, H, W, 2]: grid[n, i, j] = ((2j + 1)/W − 1, (2i + 1)/H − 1), the
 * pixel centres. gridSample(x, identityGrid(...)) returns x (bit-exact when H and W are powers
 * of two; otherwise to within rounding of the coordinates, ~1e-7 relative).
 */
export function identityGrid(n: number, h: number, w: number): Tensor {
  const op = "identityGrid";
  for (const [name, v] of [["n", n], ["h", h], ["w", w]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new ShapeError(op, `${name} must be an integer >= 0, got ${v}`);
  }
  const out = output(op, [n, h, w, 2]);
  if (out.size > 0) launch(op, identityGridShader, [out, params().u32(out.size, h, w)], grid1d(out.size));
  return out;
}

/**
 * StAdv's flow smoothness (Xiao et al. 2018), per sample: for flow [N, H, W, 2],
 *     L[n] = Σ_p Σ_{q ∈ 4-neighbours of p inside the image} sqrt(‖flow(p) − flow(q)‖² + 1e-10),
 * so every neighbouring pair counts twice (once from each side). Output [N], differentiable.
 */
export function flowSmoothness(flow: Tensor): Tensor {
  const op = "flowSmoothness";
  checkFloat(op, flow);
  if (flow.rank !== 4 || flow.shape[3] !== 2) {
    throw new ShapeError(op, `expects flow of shape [N, H, W, 2], got ${fmt(flow.shape)}`);
  }
  const [n, h, w] = flow.shape;
  if (h === 0 || w === 0) throw new ShapeError(op, `cannot measure an empty flow ${fmt(flow.shape)}`);
  const pixels = n * h * w;
  const p = params().u32(pixels, h, w);
  const terms = output(op, [n, h * w]);
  if (pixels > 0) launch(op, flowSmoothnessShader, [flow, terms, p], grid1d(pixels));
  // `terms` is not on the tape, so this sum records nothing; the rule below is the whole gradient.
  const out = sum(terms, { axes: 1 });
  terms.dispose();
  return record(op, [flow], out, (dy) => {
    const dflow = output(`${op}.backward`, flow.shape);
    if (pixels > 0) {
      launch(`${op}.backward`, flowSmoothnessBackwardShader, [flow, dy, dflow, p], grid1d(pixels));
    }
    return [dflow];
  });
}
