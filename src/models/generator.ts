/**
 * The purifier generator for CPU adapters (docs/ATOP.md §7): a one-stage gated-convolution
 * inpainting network, DeepFillv2's coarse stage shrunk to ~25-100 k parameters.
 *
 *   input [N, C+2, H, W] = concat(masked image in [-1, 1], ones, mask)      (mask = 1: missing)
 *   conv1     GConv 5×5        C+2 -> w     H × W
 *   down      GConv 3×3 /2     w   -> 2w    ⌈H/2⌉ × ⌈W/2⌉
 *   conv2     GConv 3×3        2w  -> 2w
 *   atrous1   GConv 3×3 d=2    2w  -> 2w    (receptive field grows without losing resolution)
 *   atrous2   GConv 3×3 d=4    2w  -> 2w
 *   conv3     GConv 3×3        2w  -> 2w
 *   nearest ×2 upsampling, cropped back to H × W
 *   up_conv   GConv 3×3        2w  -> w
 *   to_image  conv 3×3         w   -> C,  tanh                              output in [-1, 1]
 *
 * GConv(cin, cout) = one conv with 2·cout outputs, ELU(features)·sigmoid(gates) (see
 * GatedConv2d). Every conv keeps the size ("same" padding d·(k−1)/2); the stride-2 conv
 * rounds odd sizes up (7 -> 4), so the upsampled map (8) is cropped to the input's size (7).
 * The output is the whole image (not composited with the input): the classifier sees every
 * pixel, so the generator also denoises the visible ones (RT2).
 */
import { onesLike } from "../ops/creation.ts";
import { upsampleNearest2d } from "../ops/pool.ts";
import { concat, slice } from "../ops/shape_ops.ts";
import { tanh } from "../ops/unary.ts";
import { Conv2d, GatedConv2d } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** A gated conv that keeps the spatial size (at stride 1): padding d·(k − 1)/2. */
export function sameGatedConv(
  inChannels: number,
  outChannels: number,
  kernel: number,
  options: { stride?: number; dilation?: number } = {},
): GatedConv2d {
  const dilation = options.dilation ?? 1;
  return new GatedConv2d(inChannels, outChannels, kernel, {
    stride: options.stride ?? 1,
    dilation,
    padding: (dilation * (kernel - 1)) / 2,
  });
}

/** Nearest ×2 upsampling, cropped to [h, w] where a stride-2 conv had rounded an odd size up. */
export function upsampleTo(x: Tensor, h: number, w: number): Tensor {
  const y = upsampleNearest2d(x, 2);
  if (y.shape[2] === h && y.shape[3] === w) return y;
  return slice(y, [0, 0, 0, 0], [y.shape[0], y.shape[1], h, w]);
}

/** Throws unless x is [N, channels + 2, H, W] (image, ones, mask). */
export function checkGeneratorInput(op: string, x: Tensor, channels: number): void {
  if (x.rank !== 4 || x.shape[1] !== channels + 2) {
    throw new ShapeError(
      op,
      `input must be [N, ${channels + 2}, H, W] = concat(masked image [N, ${channels}, H, W], ones, mask), ` +
        `got ${fmt(x.shape)}`,
    );
  }
}

/**
 * The generator input: concat(masked image, ones, mask) along channels. `maskedImage` is in
 * [-1, 1] with the missing pixels already set (to 0); `mask` is [N, 1, H, W], 1 = missing.
 */
export function generatorInput(maskedImage: Tensor, mask: Tensor): Tensor {
  return concat([maskedImage, onesLike(mask), mask], 1);
}

export interface CoarseGeneratorConfig {
  /** Image channels C (1 for Fashion-MNIST, 3 for CIFAR). Default 1. */
  channels?: number;
  /** Base width w (channels of the full-resolution layers). Default 16. */
  width?: number;
}

/** Default width: 95,089 parameters for C = 1, 96,979 for C = 3. */
export const COARSE_DEFAULT_WIDTH = 16;

export class CoarseGenerator extends Module {
  readonly channels: number;
  readonly width: number;
  readonly conv1: GatedConv2d;
  readonly down: GatedConv2d;
  readonly conv2: GatedConv2d;
  readonly atrous1: GatedConv2d;
  readonly atrous2: GatedConv2d;
  readonly conv3: GatedConv2d;
  readonly upConv: GatedConv2d;
  readonly toImage: Conv2d;

  constructor(config: CoarseGeneratorConfig = {}) {
    super();
    const c = this.channels = config.channels ?? 1;
    const w = this.width = config.width ?? COARSE_DEFAULT_WIDTH;
    if (!Number.isInteger(c) || c < 1 || !Number.isInteger(w) || w < 1) {
      throw new Error(`CoarseGenerator: channels and width must be positive integers, got ${c}, ${w}`);
    }
    this.conv1 = this.child("conv1", sameGatedConv(c + 2, w, 5));
    this.down = this.child("down", sameGatedConv(w, 2 * w, 3, { stride: 2 }));
    this.conv2 = this.child("conv2", sameGatedConv(2 * w, 2 * w, 3));
    this.atrous1 = this.child("atrous1", sameGatedConv(2 * w, 2 * w, 3, { dilation: 2 }));
    this.atrous2 = this.child("atrous2", sameGatedConv(2 * w, 2 * w, 3, { dilation: 4 }));
    this.conv3 = this.child("conv3", sameGatedConv(2 * w, 2 * w, 3));
    this.upConv = this.child("up_conv", sameGatedConv(2 * w, w, 3));
    this.toImage = this.child("to_image", new Conv2d(w, c, 3, { padding: 1 }));
  }

  /** [N, C+2, H, W] -> the purified image [N, C, H, W] in [-1, 1]. */
  forward(x: Tensor): Tensor {
    checkGeneratorInput("CoarseGenerator", x, this.channels);
    const [, , h, w] = x.shape;
    let y = this.conv1.forward(x);
    for (const layer of [this.down, this.conv2, this.atrous1, this.atrous2, this.conv3]) y = layer.forward(y);
    y = this.upConv.forward(upsampleTo(y, h, w));
    return tanh(this.toImage.forward(y));
  }

  /** The outputs that the reconstruction loss covers, last = final (one stage here). */
  stageOutputs(x: Tensor): Tensor[] {
    return [this.forward(x)];
  }
}
