/**
 * WideResNet (Zagoruyko & Komodakis 2016) with pre-activation blocks, as in RobustBench's
 * `WideResNet` (names: conv1, block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}, bn1,
 * fc), so RobustBench checkpoints map one to one. WRN-28-10: depth 28, widen factor 10.
 * Initialised as RobustBench's (and the original Torch code): convs from N(0, 2/(k²·out)), He's
 * fan-out rule, and the fc bias at 0; the fc weight keeps PyTorch's default.
 */
import { add } from "../ops/arithmetic.ts";
import { BatchNorm2d, Conv2d, GlobalAvgPool2d, Linear } from "../nn/layers.ts";
import { Module, Sequential } from "../nn/module.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { Normalize } from "./normalize.ts";

/** He's fan-out normal init of a k×k conv with `out` outputs (std √(2 / (k²·out))). */
function heStd(k: number, out: number): number {
  return Math.sqrt(2 / (k * k * out));
}

class WideBasicBlock extends Module {
  readonly bn1: BatchNorm2d;
  readonly conv1: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly convShortcut: Conv2d | null;

  constructor(inChannels: number, outChannels: number, stride: number) {
    super();
    this.bn1 = this.child("bn1", new BatchNorm2d(inChannels));
    this.conv1 = this.child(
      "conv1",
      new Conv2d(inChannels, outChannels, 3, {
        stride,
        padding: 1,
        bias: false,
        weightStd: heStd(3, outChannels),
      }),
    );
    this.bn2 = this.child("bn2", new BatchNorm2d(outChannels));
    this.conv2 = this.child(
      "conv2",
      new Conv2d(outChannels, outChannels, 3, { padding: 1, bias: false, weightStd: heStd(3, outChannels) }),
    );
    this.convShortcut = inChannels !== outChannels
      ? this.child(
        "convShortcut",
        new Conv2d(inChannels, outChannels, 1, { stride, bias: false, weightStd: heStd(1, outChannels) }),
      )
      : null;
  }

  forward(x: Tensor): Tensor {
    const a = this.bn1.forwardRelu(x);
    const out = this.conv2.forward(this.bn2.ofConv(this.conv1, a, { relu: true }));
    // Pre-activation: the projection shortcut sees the activated input, identity the raw input.
    return add(this.convShortcut ? this.convShortcut.forward(a) : x, out);
  }
}

class NetworkBlock extends Module {
  readonly layer: Sequential;

  constructor(blocks: number, inChannels: number, outChannels: number, stride: number) {
    super();
    const layers = Array.from(
      { length: blocks },
      (_, i) => new WideBasicBlock(i === 0 ? inChannels : outChannels, outChannels, i === 0 ? stride : 1),
    );
    this.layer = this.child("layer", new Sequential(...layers));
  }

  forward(x: Tensor): Tensor {
    return this.layer.forward(x);
  }
}

export interface WideResNetConfig {
  depth: number;
  widen: number;
  inChannels: number;
  numClasses: number;
  mean: number[];
  std: number[];
}

export class WideResNet extends Module {
  readonly normalize: Normalize;
  readonly conv1: Conv2d;
  readonly blocks: NetworkBlock[];
  readonly bn1: BatchNorm2d;
  readonly pool = GlobalAvgPool2d();
  readonly fc: Linear;

  constructor(readonly config: WideResNetConfig) {
    super();
    if ((config.depth - 4) % 6 !== 0) throw new Error(`WideResNet: depth ${config.depth} is not 6n+4`);
    const n = (config.depth - 4) / 6;
    const ch = [16, 16 * config.widen, 32 * config.widen, 64 * config.widen];
    this.normalize = new Normalize(config.mean, config.std);
    this.conv1 = this.child(
      "conv1",
      new Conv2d(config.inChannels, ch[0], 3, { padding: 1, bias: false, weightStd: heStd(3, ch[0]) }),
    );
    this.blocks = [1, 2, 3].map((k) =>
      this.child(`block${k}`, new NetworkBlock(n, ch[k - 1], ch[k], k === 1 ? 1 : 2))
    );
    this.bn1 = this.child("bn1", new BatchNorm2d(ch[3]));
    this.fc = this.child("fc", new Linear(ch[3], config.numClasses, { zeroBias: true }));
  }

  forward(x: Tensor): Tensor {
    let y = this.conv1.forward(this.normalize.forward(x));
    for (const b of this.blocks) y = b.forward(y);
    return this.fc.forward(this.pool.forward(this.bn1.forwardRelu(y)));
  }

  override dispose(): void {
    super.dispose();
    this.normalize.dispose();
  }
}
