/**
 * SN-PatchGAN, DeepFillv2's discriminator (docs/ATOP.md §3): six 5×5 stride-2 convolutions
 * with spectral normalisation, each followed by LeakyReLU(0.2), on concat(image, mask):
 *
 *   C+1 -> w -> 2w -> 4w -> 4w -> 4w -> 4w     (w = 64 in the paper: 5,946,816 parameters for C = 3)
 *
 * Each conv halves the size (rounding up: padding 2), and the output is the final feature map
 * flattened to [N, 4w·⌈H/64⌉·⌈W/64⌉]: every element scores one patch of the input as real or
 * fake, and the hinge loss is taken over all of them. Images of 64 px or less end on a 1×1 map:
 * one score per image and channel, a global discriminator (the paper's 256 px images give 4×4
 * patches; pretrain.ts shows it images at the purifier's working size).
 *
 * Spectral normalisation (src/ops/spectral_norm.ts) keeps each layer 1-Lipschitz, which is what
 * makes the PatchGAN stable without a gradient penalty.
 */
import { conv2d, type Conv2dOptions } from "../ops/conv2d.ts";
import { randn } from "../ops/random.ts";
import { concat, flatten } from "../ops/shape_ops.ts";
import { normalizeVector, powerIteration, spectralNormalize } from "../ops/spectral_norm.ts";
import { leakyRelu } from "../ops/unary.ts";
import { defaultBound, uniformInit } from "../nn/init.ts";
import { Module } from "../nn/module.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";

export interface SpectralNormConv2dOptions {
  stride?: number;
  padding?: number;
  /** Power-iteration steps per training forward (PyTorch's n_power_iterations). Default 1. */
  powerIterations?: number;
  /** Power-iteration steps at construction, so σ is accurate from the first forward. Default 15. */
  initialIterations?: number;
}

/**
 * A conv layer whose weight is divided by its spectral norm: y = conv(x, W/σ(W)) + b.
 * Names as torch.nn.utils.spectral_norm: parameters `weight_orig`, `bias`; buffers `weight_u`
 * [out] and `weight_v` [in·k·k] (the power-iteration vectors). Training mode runs
 * `powerIterations` steps per forward, updating u and v in place; eval mode leaves them alone.
 */
export class SpectralNormConv2d extends Module {
  readonly weightOrig: Tensor;
  readonly bias: Tensor;
  readonly weightU: Tensor;
  readonly weightV: Tensor;
  readonly options: Conv2dOptions;
  readonly powerIterations: number;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    options: SpectralNormConv2dOptions = {},
  ) {
    super();
    const fanIn = inChannels * kernelSize * kernelSize;
    const bound = defaultBound(fanIn);
    this.weightOrig = this.param(
      "weight_orig",
      uniformInit([outChannels, inChannels, kernelSize, kernelSize], bound),
    );
    this.bias = this.param("bias", uniformInit([outChannels], bound));
    this.options = { stride: options.stride ?? 1, padding: options.padding ?? 0 };
    this.powerIterations = options.powerIterations ?? 1;
    // Random unit vectors, as PyTorch, then a few iterations to converge.
    const u0 = randn([outChannels]), v0 = randn([fanIn]);
    this.weightU = this.buffer("weight_u", normalizeVector(u0));
    this.weightV = this.buffer("weight_v", normalizeVector(v0));
    u0.dispose();
    v0.dispose();
    const warm = powerIteration(this.weightOrig, this.weightU, this.weightV, options.initialIterations ?? 15);
    warm.u.dispose();
    warm.v.dispose();
  }

  /** The weight actually used: W / σ with σ = uᵀWv. */
  normalizedWeight(): Tensor {
    if (!this.training) return spectralNormalize(this.weightOrig, this.weightU, this.weightV);
    const { u, v } = powerIteration(this.weightOrig, this.weightU, this.weightV, this.powerIterations);
    return spectralNormalize(this.weightOrig, u, v);
  }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.normalizedWeight(), this.bias, this.options);
  }
}

export interface PatchDiscriminatorConfig {
  /** Image channels C (the input has C + 1 with the mask). Default 3. */
  channels?: number;
  /** Base width w: channels w, 2w, 4w, 4w, 4w, 4w. Default 64 (the paper). */
  width?: number;
  /** Power-iteration steps per training forward. Default 1. */
  powerIterations?: number;
}

/** The discriminator input: concat(image, mask) along channels. */
export function discriminatorInput(image: Tensor, mask: Tensor): Tensor {
  return concat([image, mask], 1);
}

export class PatchDiscriminator extends Module {
  readonly channels: number;
  readonly width: number;
  readonly convs: SpectralNormConv2d[];

  constructor(config: PatchDiscriminatorConfig = {}) {
    super();
    const c = this.channels = config.channels ?? 3;
    const w = this.width = config.width ?? 64;
    if (!Number.isInteger(c) || c < 1 || !Number.isInteger(w) || w < 1) {
      throw new Error(`PatchDiscriminator: channels and width must be positive integers, got ${c}, ${w}`);
    }
    const sizes = [c + 1, w, 2 * w, 4 * w, 4 * w, 4 * w, 4 * w];
    this.convs = sizes.slice(1).map((out, i) =>
      this.child(
        `conv${i + 1}`,
        new SpectralNormConv2d(sizes[i], out, 5, {
          stride: 2,
          padding: 2,
          powerIterations: config.powerIterations,
        }),
      )
    );
  }

  /** [N, C+1, H, W] -> patch scores [N, 4w·⌈H/64⌉·⌈W/64⌉]. */
  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.channels + 1) {
      throw new ShapeError(
        "PatchDiscriminator",
        `input must be [N, ${this.channels + 1}, H, W] = concat(image, mask), got ${fmt(x.shape)}`,
      );
    }
    let y = x;
    for (const conv of this.convs) y = leakyRelu(conv.forward(y), 0.2);
    return flatten(y, 1);
  }
}
