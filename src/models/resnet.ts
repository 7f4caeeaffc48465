/**
 * CIFAR-style ResNets (He et al. 2016): a 3x3 stem (no max-pool), stages of residual blocks,
 * global average pooling and a linear classifier.
 *
 * Parameter names follow the widely used PyTorch CIFAR ResNet (kuangliu/pytorch-cifar, also used
 * by many robustness repos): conv1, bn1, layer{1..4}.{i}.{conv1,bn1,conv2,bn2[,conv3,bn3]},
 * layer{k}.{i}.shortcut.{0 (conv), 1 (bn)}, linear. Weights exported from such a model load
 * without renaming (BatchNorm's num_batches_tracked entries are ignored).
 */
import { BatchNorm2d, Conv2d, GlobalAvgPool2d, Linear } from "../nn/layers.ts";
import { Module, Sequential } from "../nn/module.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { Normalize } from "./normalize.ts";

interface Block extends Module {
  readonly outChannels: number;
}

/**
 * The shortcut branch of a block: x itself, or its 1x1 conv + BN projection (taking the conv's
 * moments, like the blocks' other conv + BN pairs: BatchNorm2d.ofConv).
 */
function projectShortcut(shortcut: Sequential | null, x: Tensor): Tensor {
  if (!shortcut) return x;
  const [conv, bn] = shortcut.layers as [Conv2d, BatchNorm2d];
  return bn.ofConv(conv, x);
}

/** Two 3x3 convs; identity shortcut, or 1x1 conv + BN when the shape changes. */
export class BasicBlock extends Module implements Block {
  static readonly expansion = 1;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly shortcut: Sequential | null;
  readonly outChannels: number;

  constructor(inChannels: number, channels: number, stride: number) {
    super();
    this.outChannels = channels;
    this.conv1 = this.child(
      "conv1",
      new Conv2d(inChannels, channels, 3, { stride, padding: 1, bias: false }),
    );
    this.bn1 = this.child("bn1", new BatchNorm2d(channels));
    this.conv2 = this.child("conv2", new Conv2d(channels, channels, 3, { padding: 1, bias: false }));
    this.bn2 = this.child("bn2", new BatchNorm2d(channels));
    this.shortcut = stride !== 1 || inChannels !== channels
      ? this.child(
        "shortcut",
        new Sequential(
          new Conv2d(inChannels, channels, 1, { stride, bias: false }),
          new BatchNorm2d(channels),
        ),
      )
      : null;
  }

  forward(x: Tensor): Tensor {
    // The shortcut first: its output joins in bn2's pass, and in the backward the shortcut's
    // data gradient then comes last and adds into the one conv1 wrote.
    const shortcut = projectShortcut(this.shortcut, x);
    const h = this.bn1.ofConv(this.conv1, x, { relu: true });
    return this.bn2.ofConv(this.conv2, h, { relu: true, residual: shortcut });
  }
}

/** 1x1 reduce, 3x3, 1x1 expand (x4); used by ResNet-50. */
export class Bottleneck extends Module implements Block {
  static readonly expansion = 4;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly conv3: Conv2d;
  readonly bn3: BatchNorm2d;
  readonly shortcut: Sequential | null;
  readonly outChannels: number;

  constructor(inChannels: number, channels: number, stride: number) {
    super();
    const out = channels * Bottleneck.expansion;
    this.outChannels = out;
    this.conv1 = this.child("conv1", new Conv2d(inChannels, channels, 1, { bias: false }));
    this.bn1 = this.child("bn1", new BatchNorm2d(channels));
    this.conv2 = this.child("conv2", new Conv2d(channels, channels, 3, { stride, padding: 1, bias: false }));
    this.bn2 = this.child("bn2", new BatchNorm2d(channels));
    this.conv3 = this.child("conv3", new Conv2d(channels, out, 1, { bias: false }));
    this.bn3 = this.child("bn3", new BatchNorm2d(out));
    this.shortcut = stride !== 1 || inChannels !== out
      ? this.child(
        "shortcut",
        new Sequential(new Conv2d(inChannels, out, 1, { stride, bias: false }), new BatchNorm2d(out)),
      )
      : null;
  }

  forward(x: Tensor): Tensor {
    const shortcut = projectShortcut(this.shortcut, x);
    let y = this.bn1.ofConv(this.conv1, x, { relu: true });
    y = this.bn2.ofConv(this.conv2, y, { relu: true });
    return this.bn3.ofConv(this.conv3, y, { relu: true, residual: shortcut });
  }
}

export interface ResNetConfig {
  block: "basic" | "bottleneck";
  /** Blocks per stage, e.g. [2, 2, 2, 2] for ResNet-18, [1, 1, 1] for ResNet-8. */
  blocks: number[];
  /** Channels of each stage, e.g. [64, 128, 256, 512] or [16, 32, 64]. */
  widths: number[];
  inChannels: number;
  numClasses: number;
  /** Per-channel input normalisation (inputs are in [0,1]). */
  mean: number[];
  std: number[];
}

export class ResNet extends Module {
  readonly normalize: Normalize;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly stages: Sequential[];
  readonly pool = GlobalAvgPool2d();
  readonly linear: Linear;

  constructor(readonly config: ResNetConfig) {
    super();
    const { widths, blocks } = config;
    if (widths.length !== blocks.length) {
      throw new Error("ResNet: widths and blocks must have the same length");
    }
    this.normalize = new Normalize(config.mean, config.std);
    this.conv1 = this.child(
      "conv1",
      new Conv2d(config.inChannels, widths[0], 3, { padding: 1, bias: false }),
    );
    this.bn1 = this.child("bn1", new BatchNorm2d(widths[0]));
    let channels = widths[0];
    this.stages = widths.map((w, s) => {
      const layer: Module[] = [];
      for (let i = 0; i < blocks[s]; i++) {
        const stride = i === 0 && s > 0 ? 2 : 1;
        const block: Block = config.block === "basic"
          ? new BasicBlock(channels, w, stride)
          : new Bottleneck(channels, w, stride);
        channels = block.outChannels;
        layer.push(block);
      }
      return this.child(`layer${s + 1}`, new Sequential(...layer));
    });
    this.linear = this.child("linear", new Linear(channels, config.numClasses));
  }

  /** Features before the classifier: [N, channels]. */
  features(x: Tensor): Tensor {
    let y = this.bn1.ofConv(this.conv1, this.normalize.forward(x), { relu: true });
    for (const stage of this.stages) y = stage.forward(y);
    return this.pool.forward(y);
  }

  forward(x: Tensor): Tensor {
    return this.linear.forward(this.features(x));
  }

  override dispose(): void {
    super.dispose();
    this.normalize.dispose();
  }
}
