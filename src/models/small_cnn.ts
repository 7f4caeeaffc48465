/** A small CNN for tests and quick runs: two conv-BN-ReLU stages, global pooling, linear. */
import { maxPool2d } from "../ops/pool.ts";
import { BatchNorm2d, Conv2d, GlobalAvgPool2d, Linear } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { Normalize } from "./normalize.ts";

export interface SmallCnnConfig {
  inChannels: number;
  numClasses: number;
  width: number;
  mean: number[];
  std: number[];
}

export class SmallCnn extends Module {
  readonly normalize: Normalize;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly pool = GlobalAvgPool2d();
  readonly linear: Linear;

  constructor(readonly config: SmallCnnConfig) {
    super();
    const w = config.width;
    this.normalize = new Normalize(config.mean, config.std);
    this.conv1 = this.child("conv1", new Conv2d(config.inChannels, w, 3, { padding: 1, bias: false }));
    this.bn1 = this.child("bn1", new BatchNorm2d(w));
    this.conv2 = this.child("conv2", new Conv2d(w, 2 * w, 3, { padding: 1, bias: false }));
    this.bn2 = this.child("bn2", new BatchNorm2d(2 * w));
    this.linear = this.child("linear", new Linear(2 * w, config.numClasses));
  }

  forward(x: Tensor): Tensor {
    let y = maxPool2d(this.bn1.ofConv(this.conv1, this.normalize.forward(x), { relu: true }), 2);
    y = this.bn2.ofConv(this.conv2, y, { relu: true });
    return this.linear.forward(this.pool.forward(y));
  }

  override dispose(): void {
    super.dispose();
    this.normalize.dispose();
  }
}
