/**
 * Pooling and upsampling over NCHW tensors, each with its gradient rule:
 *   maxPool2d / avgPool2d    k×k windows, stride (default k), zero padding; output size
 *                            floor((H + 2p − k) / s) + 1 like PyTorch (odd sizes drop the rest);
 *   globalAvgPool2d          [N, C, H, W] -> [N, C], the mean of each plane;
 *   upsampleNearest2d        integer factor, like F.interpolate(scale_factor=s, mode="nearest").
 * Kernels are in shaders/pool.ts.
 */
import {
  globalAvgPoolBackwardShader,
  globalAvgPoolShader,
  pool2dBackwardShader,
  pool2dShader,
  type PoolKind,
  upsampleNearestBackwardShader,
  upsampleNearestShader,
} from "../../shaders/pool.ts";
import { divisionMagic } from "../../shaders/common.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkFloat } from "./elementwise.ts";
import { currentGpu } from "../device/runtime.ts";
import {
  checkLoopLength,
  CPU_ADAPTER_MAX_LOOP,
  grid1d,
  launch,
  output,
  params,
  withScalarOperand,
} from "./kernel.ts";
import { reduceAxes } from "./reduce_axes.ts";

export interface Pool2dOptions {
  /** Step between windows (default: the kernel size, non-overlapping windows). */
  stride?: number;
  /** Zeros (avg) or ignored positions (max) added on every side; at most kernel / 2. */
  padding?: number;
}

function checkNchw(op: string, x: Tensor): void {
  checkFloat(op, x);
  if (x.rank !== 4) throw new ShapeError(op, `expects x of shape [N, C, H, W], got ${fmt(x.shape)}`);
}

function checkPositiveInt(op: string, name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) {
    throw new ShapeError(op, `${name} must be an integer >= ${min}, got ${v}`);
  }
}

function pool2d(kind: PoolKind, x: Tensor, kernel: number, options: Pool2dOptions): Tensor {
  const op = `${kind}Pool2d`;
  checkNchw(op, x);
  const { stride = kernel, padding = 0 } = options;
  checkPositiveInt(op, "kernel", kernel);
  checkPositiveInt(op, "stride", stride);
  checkPositiveInt(op, "padding", padding, 0);
  if (padding > kernel / 2) {
    throw new ShapeError(op, `padding ${padding} must be at most half the kernel size ${kernel}`);
  }
  const [n, c, h, w] = x.shape;
  const outH = Math.floor((h + 2 * padding - kernel) / stride) + 1;
  const outW = Math.floor((w + 2 * padding - kernel) / stride) + 1;
  if (outH < 1 || outW < 1) {
    throw new ShapeError(
      op,
      `input ${fmt(x.shape)} is smaller than the ${kernel}x${kernel} window (padding ${padding}); ` +
        `use a smaller kernel or a larger input`,
    );
  }
  // Each output loops over its window, each input gradient over the windows that reach it.
  checkLoopLength(op, kernel * kernel, `the ${kernel}x${kernel} window`);
  checkLoopLength(
    `${op}.backward`,
    Math.ceil(kernel / stride) ** 2,
    `the windows over one input (kernel ${kernel}, stride ${stride})`,
  );
  const out = output(op, [n, c, outH, outW]);
  // `total`: the elements the kernel writes (outputs forward, inputs backward).
  const withTotal = (total: number) =>
    params().u32(total, h, w, outH, outW, kernel, stride, padding).f32(1 / (kernel * kernel));
  // Max pooling's backward needs the argmax of each window: record it only when recording.
  const recording = needsGrad(x);
  const indices = kind === "max" && recording ? output(op, out.shape, "i32") : null;
  if (out.size > 0) {
    withScalarOperand(x, out.size, (xIn, texture) => {
      const bindings = indices ? [xIn, out, indices, withTotal(out.size)] : [xIn, out, withTotal(out.size)];
      launch(op, pool2dShader(kind, indices !== null, texture), bindings, grid1d(out.size));
    });
  }
  if (!recording) return out;
  return record(op, [x], out, (dy) => {
    const dx = output(`${op}.backward`, x.shape);
    if (dx.size > 0) {
      withScalarOperand(dy, dx.size, (dyIn, texture) => {
        const bindings = indices ? [dyIn, indices, dx, withTotal(dx.size)] : [dyIn, dx, withTotal(dx.size)];
        launch(`${op}.backward`, pool2dBackwardShader(kind, texture), bindings, grid1d(dx.size));
      });
    }
    return [dx];
  });
}

/**
 * Max over k×k windows. Gradient: dy goes to the window's first maximal element (row-major),
 * summed where overlapping windows share it.
 */
export function maxPool2d(x: Tensor, kernel: number, options: Pool2dOptions = {}): Tensor {
  return pool2d("max", x, kernel, options);
}

/** Mean over k×k windows (padding counts as zeros, divisor k²). */
export function avgPool2d(x: Tensor, kernel: number, options: Pool2dOptions = {}): Tensor {
  return pool2d("avg", x, kernel, options);
}

/** Mean over H and W: [N, C, H, W] -> [N, C]. */
export function globalAvgPool2d(x: Tensor): Tensor {
  const op = "globalAvgPool2d";
  checkNchw(op, x);
  const [n, c, h, w] = x.shape;
  const plane = h * w;
  if (plane === 0) throw new ShapeError(op, `cannot average empty planes of ${fmt(x.shape)}`);
  // The kernel loops over a plane per output: past llvmpipe's loop limit (see
  // CPU_ADAPTER_MAX_LOOP), the chunked reduction instead.
  const long = plane > CPU_ADAPTER_MAX_LOOP && currentGpu().adapterClass === "cpu";
  const out = long ? reduceAxes(op, "sum", x, [2, 3], false, 1 / plane) : output(op, [n, c]);
  if (out.size > 0 && !long) {
    withScalarOperand(x, x.size, (xIn, texture) => {
      const p = params().u32(out.size, plane).f32(1 / plane);
      launch(op, globalAvgPoolShader(texture), [xIn, out, p], grid1d(out.size));
    });
  }
  return record(op, [x], out, (dy) => {
    const dx = output(`${op}.backward`, x.shape);
    if (dx.size > 0) {
      const width = plane % 4 === 0 ? 4 : 1;
      const p = params().u32(dx.size / width).f32(1 / plane).u32(...divisionMagic(plane / width));
      withScalarOperand(dy, dx.size, (dyIn, texture) => {
        launch(
          `${op}.backward`,
          globalAvgPoolBackwardShader(width, texture),
          [dyIn, dx, p],
          grid1d(dx.size / width),
        );
      });
    }
    return [dx];
  });
}

/**
 * Nearest-neighbour upsampling by an integer factor (default 2): [N, C, H, W] ->
 * [N, C, s·H, s·W]. Gradient: each input element receives the sum of its s×s block.
 */
export function upsampleNearest2d(x: Tensor, scale = 2): Tensor {
  const op = "upsampleNearest2d";
  checkNchw(op, x);
  checkPositiveInt(op, "scale", scale);
  const [n, c, h, w] = x.shape;
  const out = output(op, [n, c, h * scale, w * scale]);
  if (out.size > 0) {
    withScalarOperand(x, out.size, (xIn, texture) => {
      launch(
        op,
        upsampleNearestShader(texture),
        [xIn, out, params().u32(x.size, h, w, scale)],
        grid1d(x.size),
      );
    });
  }
  return record(op, [x], out, (dy) => {
    const dx = output(`${op}.backward`, x.shape);
    if (dx.size > 0) {
      const p = params().u32(dx.size, h, w, scale);
      withScalarOperand(dy, dy.size, (dyIn, texture) => {
        launch(`${op}.backward`, upsampleNearestBackwardShader(texture), [dyIn, dx, p], grid1d(dx.size));
      });
    }
    return [dx];
  });
}
