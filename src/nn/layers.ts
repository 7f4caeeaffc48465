/**
 * Layers: modules around the ops, holding parameters with PyTorch's names and layouts
 * (Conv2d.weight [out, in, kh, kw], Linear.weight [out, in], BatchNorm2d.running_mean ...).
 */
import { batchNorm2d, batchNormTakesMoments, type ChannelMoments } from "../ops/batchnorm.ts";
import { conv2d, type Conv2dOptions, conv2dWithMoments } from "../ops/conv2d.ts";
import { ones, zeros } from "../ops/creation.ts";
import { randn } from "../ops/random.ts";
import { linear } from "../ops/matmul.ts";
import { avgPool2d, globalAvgPool2d, maxPool2d, upsampleNearest2d } from "../ops/pool.ts";
import { gatedActivation } from "../ops/gated_activation.ts";
import { flatten } from "../ops/shape_ops.ts";
import { elu, leakyRelu, relu, sigmoid, tanh } from "../ops/unary.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { defaultBound, uniformInit } from "./init.ts";
import { Lambda, Module } from "./module.ts";

type Pair = number | [number, number];

export interface Conv2dLayerOptions {
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
  bias?: boolean;
  /** Weights from N(0, weightStd²) instead of PyTorch's default U(±1/√fan_in). */
  weightStd?: number;
}

export class Conv2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly options: Conv2dOptions;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: Pair,
    options: Conv2dLayerOptions = {},
  ) {
    super();
    const [kh, kw] = typeof kernelSize === "number" ? [kernelSize, kernelSize] : kernelSize;
    const bound = defaultBound(inChannels * kh * kw);
    const shape = [outChannels, inChannels, kh, kw];
    this.weight = this.param(
      "weight",
      options.weightStd === undefined ? uniformInit(shape, bound) : randn(shape, { std: options.weightStd }),
    );
    this.bias = options.bias === false ? null : this.param("bias", uniformInit([outChannels], bound));
    this.options = { stride: options.stride, padding: options.padding, dilation: options.dilation };
  }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias ?? undefined, this.options);
  }
}

export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    /** `zeroBias`: the bias starts at 0 instead of PyTorch's default U(±1/√fan_in). */
    options: { bias?: boolean; zeroBias?: boolean } = {},
  ) {
    super();
    const bound = defaultBound(inFeatures);
    this.weight = this.param("weight", uniformInit([outFeatures, inFeatures], bound));
    this.bias = options.bias === false
      ? null
      : this.param("bias", options.zeroBias ? zeros([outFeatures]) : uniformInit([outFeatures], bound));
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

export class BatchNorm2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;

  constructor(readonly numFeatures: number, readonly options: { momentum?: number; eps?: number } = {}) {
    super();
    this.weight = this.param("weight", ones([numFeatures]));
    this.bias = this.param("bias", zeros([numFeatures]));
    this.runningMean = this.buffer("running_mean", zeros([numFeatures]));
    this.runningVar = this.buffer("running_var", ones([numFeatures]));
  }

  forward(x: Tensor): Tensor {
    return this.#apply(x, false);
  }

  /** relu(batchnorm(x)) in one fused kernel (one elementwise pass less, forward and backward). */
  forwardRelu(x: Tensor): Tensor {
    return this.#apply(x, true);
  }

  /**
   * relu(batchnorm(x) + residual) in one fused kernel: a residual block's join, without writing
   * and re-reading batchnorm(x) for a separate add.
   */
  forwardAddRelu(x: Tensor, residual: Tensor): Tensor {
    return this.#apply(x, true, residual);
  }

  /**
   * batchnorm(conv(x)), ReLU'd when `relu`, with `residual` added before the ReLU. In training,
   * where the batchnorm can take them (llvmpipe), the conv writes its output's per-channel
   * moments as it stores it, so the batch statistics need no pass over the conv output.
   */
  ofConv(conv: Conv2d, x: Tensor, options: { relu?: boolean; residual?: Tensor } = {}): Tensor {
    const { relu = false, residual } = options;
    if (!this.training || !batchNormTakesMoments(conv.outChannels)) {
      return this.#apply(conv.forward(x), relu, residual);
    }
    const { y, moments } = conv2dWithMoments(x, conv.weight, conv.bias ?? undefined, conv.options);
    try {
      return this.#apply(y, relu, residual, moments);
    } finally {
      moments?.partials.dispose();
    }
  }

  #apply(x: Tensor, relu: boolean, residual?: Tensor, moments?: ChannelMoments): Tensor {
    return batchNorm2d(x, this.weight, this.bias, this.runningMean, this.runningVar, {
      training: this.training,
      momentum: this.options.momentum ?? 0.1,
      eps: this.options.eps ?? 1e-5,
      relu,
      residual,
      moments,
    });
  }
}

/**
 * Gated convolution (Yu et al., "Free-Form Image Inpainting with Gated Convolution"): one conv
 * with 2·C outputs split into features a and gates b; output ELU(a) · sigmoid(b). The gate lets
 * the network learn which pixels (e.g. masked ones) to trust.
 */
export class GatedConv2d extends Module {
  readonly conv: Conv2d;

  constructor(
    inChannels: number,
    readonly outChannels: number,
    kernelSize: Pair,
    options: Conv2dLayerOptions = {},
  ) {
    super();
    // Initialisation that keeps the activations' scale through a stack of gated convs: He-normal
    // (std √(2/fan_in)) compensates ELU dropping the negative half, and a further √2 the sigmoid
    // gate's ≈ 0.5 at init: std 2/√fan_in. With PyTorch's default uniform init every layer
    // shrinks its input ~3×, the generator's output stops depending on its input, and L1
    // training collapses to a constant image (measured on the coarse generator).
    const [kh, kw] = typeof kernelSize === "number" ? [kernelSize, kernelSize] : kernelSize;
    const weightStd = options.weightStd ?? 2 / Math.sqrt(inChannels * kh * kw);
    this.conv = this.child(
      "conv",
      new Conv2d(inChannels, 2 * outChannels, kernelSize, { ...options, weightStd }),
    );
  }

  forward(x: Tensor): Tensor {
    return gatedActivation(this.conv.forward(x), this.outChannels);
  }
}

export const ReLU = () => new Lambda("ReLU", relu);
export const LeakyReLU = (slope = 0.01) => new Lambda("LeakyReLU", (x) => leakyRelu(x, slope));
export const ELU = (alpha = 1) => new Lambda("ELU", (x) => elu(x, alpha));
export const Sigmoid = () => new Lambda("Sigmoid", sigmoid);
export const Tanh = () => new Lambda("Tanh", tanh);
export const MaxPool2d = () => new Lambda("MaxPool2d", (x) => maxPool2d(x, 2));
export const AvgPool2d = () => new Lambda("AvgPool2d", (x) => avgPool2d(x, 2));
export const GlobalAvgPool2d = () => new Lambda("GlobalAvgPool2d", globalAvgPool2d);
export const Upsample = () => new Lambda("Upsample", (x) => upsampleNearest2d(x, 2));
export const Flatten = () => new Lambda("Flatten", (x) => flatten(x, 1));
