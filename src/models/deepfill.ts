/**
 * The paper-scale purifier: DeepFillv2's two-stage gated-convolution inpainting generator
 * (Yu et al., "Free-Form Image Inpainting with Gated Convolution", ICCV 2019), laid out like
 * the authors' TensorFlow `build_inpaint_net` (docs/ATOP.md §3). Layer names follow that code.
 * With w = width (24 in the paper) and GConv(cin, cout) = conv with 2·cout outputs gated as
 * ELU(a)·sigmoid(b):
 *
 * Stage 1 (coarse), input [N, C+2, H, W] = concat(masked image, ones, mask):
 *   conv1 5×5 C+2->w · conv2_downsample /2 w->2w · conv3 2w->2w · conv4_downsample /2 2w->4w ·
 *   conv5 4w->4w (H/4) · seven 3×3 GConvs 4w->4w with dilations 1, 2, 4, 8, 16, 1, 1
 *   (conv6, conv7..10_atrous, conv11, conv12) · up ×2, conv13_upsample 4w->2w · conv14 ·
 *   up ×2, conv15_upsample 2w->w · conv16 w->w/2 · conv17 (plain conv) w/2->C · tanh = x1.
 *
 * Stage 2 (refinement), input the composite x1·m + image·(1−m) alone (C channels: the TF code
 * has the concat with ones and mask commented out, `xnow = x`):
 *   hallucination branch: xconv1 5×5 C->w · /2 w->w · w->2w · /2 2w->2w · 2w->4w · 4w->4w ·
 *     dilations 2, 4, 8, 16;
 *   attention branch: pmconv1 5×5 C->w · /2 w->w · w->2w · /2 2w->4w · 4w->4w ·
 *     pmconv6 (ReLU-gated) · contextual attention · pmconv9 · pmconv10;
 *   merge: concat (8w) · allconv11 8w->4w · allconv12 · up, 4w->2w · 2w->2w · up, 2w->w ·
 *     w->w/2 · conv w/2->C · tanh = x2.
 *
 * At w = 24, C = 3: 1,631,151 + 2,421,327 = 4,052,478 parameters (ATOP.md: "about 4.05 M"), as the
 * TF original.
 *
 * Contextual attention (DeepFill v1, Yu et al. 2018) fills the hole's features by copying
 * features from the known region: every 3×3 feature patch in the hole attends to all 3×3
 * patches outside the hole by cosine similarity, softmax(10·similarity), and the output is the
 * attention-weighted sum of those patches, folded back onto the pixel grid. It is built from
 * ops (see `contextualAttention`), costs O((H/4·W/4)²) memory, and is off by default on CPU
 * adapters (the branch is then the identity; parameters are the same either way).
 * Simplifications against the TF code: matching runs at H/4 itself (TF matches at H/8 and
 * copies 4×4 patches back at H/4, `rate=2`), both patches are normalised (the paper's cosine;
 * TF leaves the foreground unnormalised), and TF's 3×3 "fuse" smoothing of the scores is left
 * out.
 *
 * Odd sizes: stride-2 convs round up (7 -> 4), upsampling is cropped back (8 -> 7).
 *
 * Padding is symmetric, d·(k − 1)/2 on each side (`sameGatedConv`), as in the PyTorch ports of
 * DeepFillv2. TF's 'SAME' pads a stride-2 conv on an even size by 0 before and 1 after, so its
 * downsampled grid sits one input pixel later: the same weights give slightly different maps.
 * That matters only for weights ported from the TF checkpoint, which this project does not load.
 */
import { add, div, mul, mulScalar, rsubScalar } from "../ops/arithmetic.ts";
import { conv2d } from "../ops/conv2d.ts";
import { fromArray } from "../ops/creation.ts";
import { logSoftmax } from "../ops/loss.ts";
import { batchMatmul } from "../ops/matmul.ts";
import { avgPool2d, maxPool2d, upsampleNearest2d } from "../ops/pool.ts";
import { sum } from "../ops/reduce.ts";
import { concat, reshape, slice } from "../ops/shape_ops.ts";
import { clamp, exp, relu, sigmoid, sqrt, square, tanh } from "../ops/unary.ts";
import { noGrad } from "../autograd/tape.ts";
import { currentGpu } from "../device/runtime.ts";
import { Conv2d } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import { keep } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkGeneratorInput, sameGatedConv, upsampleTo } from "./generator.ts";

export interface DeepFillConfig {
  /** Image channels C. Default 3. */
  channels?: number;
  /** Base width w (24 in the paper; tests use 2-4). Default 24. */
  width?: number;
  /** Run contextual attention in stage 2. Default: on for real GPUs, off on CPU adapters. */
  contextualAttention?: boolean;
  /** Softmax scale of the attention (10 in DeepFill). */
  attentionScale?: number;
  /**
   * Run on the input upsampled by this integer factor (nearest) and average-pool both outputs
   * back (default 1). At 32×32 the bottleneck is 8×8, where the dilation-8 and -16 layers see
   * only their centre tap; AToP's code ran DeepFill on CIFAR upsampled to 256×256 (before the
   * attack: ATOP.md trap 2; here the resize is part of g, so the threat stays on the input).
   */
  inputScale?: number;
}

/** A GConv whose feature half goes through ReLU instead of ELU (DeepFill's pmconv6). */
class ReluGatedConv2d extends Module {
  readonly conv: Conv2d;

  constructor(inChannels: number, readonly outChannels: number) {
    super();
    this.conv = this.child("conv", new Conv2d(inChannels, 2 * outChannels, 3, { padding: 1 }));
  }

  forward(x: Tensor): Tensor {
    const y = this.conv.forward(x);
    const c = this.outChannels, [n, , h, w] = y.shape;
    const features = slice(y, [0, 0, 0, 0], [n, c, h, w]);
    const gates = slice(y, [0, c, 0, 0], [n, c, h, w]);
    return mul(relu(features), sigmoid(gates));
  }
}

/** The channels [from, from + count) of an NCHW tensor. */
function channels(x: Tensor, from: number, count: number): Tensor {
  const [n, , h, w] = x.shape;
  return slice(x, [0, from, 0, 0], [n, count, h, w]);
}

/** Runs layers in order. */
function chain(x: Tensor, layers: Module[]): Tensor {
  return layers.reduce((y, layer) => layer.forward(y), x);
}

/**
 * Constant conv weights that turn a [N, C, h, w] map into its 3×3 patches and back:
 *  - unfold [9C, C, 3, 3]: output channel c·9 + ky·3 + kx copies input channel c at offset
 *    (ky − 1, kx − 1), so with padding 1 the 9C channels at a pixel are its 3×3 patch
 *    (zeros outside the map), in the order of torch's unfold;
 *  - fold [C, 9C, 3, 3]: the adjoint (a transposed conv = a conv with the kernel flipped):
 *    every patch element is added back onto the pixel it came from.
 */
export function patchKernels(c: number): { unfold: Tensor; fold: Tensor } {
  const unfold = new Float32Array(9 * c * c * 9);
  const fold = new Float32Array(c * 9 * c * 9);
  for (let ch = 0; ch < c; ch++) {
    for (let k = 0; k < 9; k++) {
      const ky = Math.floor(k / 3), kx = k % 3;
      unfold[((ch * 9 + k) * c + ch) * 9 + k] = 1;
      fold[(ch * 9 * c + ch * 9 + k) * 9 + (2 - ky) * 3 + (2 - kx)] = 1;
    }
  }
  return { unfold: fromArray(unfold, [9 * c, c, 3, 3]), fold: fromArray(fold, [c, 9 * c, 3, 3]) };
}

/**
 * Contextual attention over a feature map x [N, C, h, w] (foreground = background = x, as in
 * DeepFill's stage 2), with `validPatch` [N, 1, h, w] = 1 where the 3×3 patch around a pixel
 * lies entirely outside the hole (only those may be copied). With L = h·w and P [N, 9C, L] the
 * patches:
 *
 *   S[b, f] = <P_b/‖P_b‖, P_f/‖P_f‖>                cosine similarity (batchMatmul, [N, L, L])
 *   A[:, f] = softmax_b(scale · S[b, f]·valid_b) · valid_b                     (as DeepFill)
 *   out     = fold(P · A) / 9                        each pixel averages its 9 overlapping patches
 *
 * `kernels` from patchKernels(C). Differentiable w.r.t. x.
 */
export function contextualAttention(
  x: Tensor,
  validPatch: Tensor,
  kernels: { unfold: Tensor; fold: Tensor },
  scale = 10,
): Tensor {
  const [n, c, h, w] = x.shape, l = h * w;
  const patches = reshape(conv2d(x, kernels.unfold, undefined, { padding: 1 }), [n, 9 * c, l]);
  // ‖P_l‖, kept away from 0 (an all-zero patch) as DeepFill does with max(‖P‖, 1e-4). Clamping
  // the sum of squares instead keeps sqrt's derivative 1/(2√s) finite there (no 0·∞ = NaN).
  const norms = sqrt(clamp(sum(square(patches), { axes: 1, keepDims: true }), 1e-8, 3.4e38));
  const unit = div(patches, norms);
  const similarity = batchMatmul(unit, unit, { transposeA: true }); // [N, L_background, L_foreground]
  const valid = reshape(validPatch, [n, l, 1]);
  const weights = mul(exp(logSoftmax(mulScalar(mul(similarity, valid), scale), 1)), valid);
  const copied = batchMatmul(patches, weights); // [N, 9C, L]: the weighted patch for each pixel
  return mulScalar(conv2d(reshape(copied, [n, 9 * c, h, w]), kernels.fold, undefined, { padding: 1 }), 1 / 9);
}

/**
 * validPatch for `contextualAttention` at the resolution of a map after two stride-2 3×3
 * convs: the mask is max-pooled with the same geometry (a feature pixel is "hole" if its
 * window touches the hole), then a patch is valid when no pixel of its 3×3 window is hole.
 */
export function validPatches(mask: Tensor): Tensor {
  return noGrad(() => {
    const down = { stride: 2, padding: 1 };
    const small = maxPool2d(maxPool2d(mask, 3, down), 3, down);
    return rsubScalar(maxPool2d(small, 3, { stride: 1, padding: 1 }), 1);
  });
}

class CoarseStage extends Module {
  readonly encoder: Module[];
  readonly bottleneck: Module[];
  readonly up1: Module[];
  readonly up2: Module[];

  constructor(c: number, w: number) {
    super();
    const half = Math.max(1, Math.floor(w / 2));
    const g = (name: string, ...args: Parameters<typeof sameGatedConv>) =>
      this.child(name, sameGatedConv(...args));
    this.encoder = [
      g("conv1", c + 2, w, 5),
      g("conv2_downsample", w, 2 * w, 3, { stride: 2 }),
      g("conv3", 2 * w, 2 * w, 3),
      g("conv4_downsample", 2 * w, 4 * w, 3, { stride: 2 }),
      g("conv5", 4 * w, 4 * w, 3),
    ];
    const names = [
      "conv6",
      "conv7_atrous",
      "conv8_atrous",
      "conv9_atrous",
      "conv10_atrous",
      "conv11",
      "conv12",
    ];
    this.bottleneck = [1, 2, 4, 8, 16, 1, 1].map((d, i) => g(names[i], 4 * w, 4 * w, 3, { dilation: d }));
    this.up1 = [g("conv13_upsample", 4 * w, 2 * w, 3), g("conv14", 2 * w, 2 * w, 3)];
    this.up2 = [
      g("conv15_upsample", 2 * w, w, 3),
      g("conv16", w, half, 3),
      this.child("conv17", new Conv2d(half, c, 3, { padding: 1 })),
    ];
  }

  forward(x: Tensor): Tensor {
    const [, , h, w] = x.shape;
    let y = chain(chain(x, this.encoder), this.bottleneck); // [N, 4w, H/4, W/4]
    // A stride-2 3×3 conv with padding 1 maps h to ⌈h/2⌉.
    y = chain(upsampleTo(y, Math.ceil(h / 2), Math.ceil(w / 2)), this.up1);
    return tanh(chain(upsampleTo(y, h, w), this.up2));
  }
}

class RefinementStage extends Module {
  readonly hallucination: Module[];
  readonly attentionIn: Module[];
  readonly attentionOut: Module[];
  readonly merge: Module[];
  readonly up1: Module[];
  readonly up2: Module[];
  #kernels: { unfold: Tensor; fold: Tensor } | null;

  constructor(c: number, w: number, readonly attention: boolean, readonly attentionScale: number) {
    super();
    const half = Math.max(1, Math.floor(w / 2));
    const g = (name: string, ...args: Parameters<typeof sameGatedConv>) =>
      this.child(name, sameGatedConv(...args));
    this.hallucination = [
      g("xconv1", c, w, 5),
      g("xconv2_downsample", w, w, 3, { stride: 2 }),
      g("xconv3", w, 2 * w, 3),
      g("xconv4_downsample", 2 * w, 2 * w, 3, { stride: 2 }),
      g("xconv5", 2 * w, 4 * w, 3),
      g("xconv6", 4 * w, 4 * w, 3),
      g("xconv7_atrous", 4 * w, 4 * w, 3, { dilation: 2 }),
      g("xconv8_atrous", 4 * w, 4 * w, 3, { dilation: 4 }),
      g("xconv9_atrous", 4 * w, 4 * w, 3, { dilation: 8 }),
      g("xconv10_atrous", 4 * w, 4 * w, 3, { dilation: 16 }),
    ];
    this.attentionIn = [
      g("pmconv1", c, w, 5),
      g("pmconv2_downsample", w, w, 3, { stride: 2 }),
      g("pmconv3", w, 2 * w, 3),
      g("pmconv4_downsample", 2 * w, 4 * w, 3, { stride: 2 }),
      g("pmconv5", 4 * w, 4 * w, 3),
      this.child("pmconv6", new ReluGatedConv2d(4 * w, 4 * w)),
    ];
    this.attentionOut = [g("pmconv9", 4 * w, 4 * w, 3), g("pmconv10", 4 * w, 4 * w, 3)];
    this.merge = [g("allconv11", 8 * w, 4 * w, 3), g("allconv12", 4 * w, 4 * w, 3)];
    this.up1 = [g("allconv13_upsample", 4 * w, 2 * w, 3), g("allconv14", 2 * w, 2 * w, 3)];
    this.up2 = [
      g("allconv15_upsample", 2 * w, w, 3),
      g("allconv16", w, half, 3),
      this.child("allconv17", new Conv2d(half, c, 3, { padding: 1 })),
    ];
    this.#kernels = null;
    if (attention) {
      const k = patchKernels(4 * w);
      this.#kernels = { unfold: keep(k.unfold), fold: keep(k.fold) };
    }
  }

  /** x = concat(composite image, mask): `refine` with the mask as the last channel. */
  forward(x: Tensor): Tensor {
    const c = x.shape[1] - 1;
    return this.refine(channels(x, 0, c), channels(x, c, 1));
  }

  /** x = the composite image, mask = the hole (1) [N, 1, H, W]. */
  refine(x: Tensor, mask: Tensor): Tensor {
    const [, , h, w] = x.shape;
    const hallucinated = chain(x, this.hallucination);
    let attended = chain(x, this.attentionIn);
    if (this.#kernels) {
      const valid = validPatches(mask);
      attended = contextualAttention(attended, valid, this.#kernels, this.attentionScale);
    }
    attended = chain(attended, this.attentionOut);
    let y = chain(concat([hallucinated, attended], 1), this.merge);
    // A stride-2 3×3 conv with padding 1 maps h to ⌈h/2⌉.
    y = chain(upsampleTo(y, Math.ceil(h / 2), Math.ceil(w / 2)), this.up1);
    return tanh(chain(upsampleTo(y, h, w), this.up2));
  }

  override dispose(): void {
    super.dispose();
    this.#kernels?.unfold.dispose();
    this.#kernels?.fold.dispose();
  }
}

/** Default width: 4,052,478 parameters for C = 3 (4,044,842 for C = 1). */
export const DEEPFILL_DEFAULT_WIDTH = 24;

export class DeepFillGenerator extends Module {
  readonly channels: number;
  readonly width: number;
  readonly inputScale: number;
  readonly stage1: CoarseStage;
  readonly stage2: RefinementStage;

  constructor(config: DeepFillConfig = {}) {
    super();
    const c = this.channels = config.channels ?? 3;
    const w = this.width = config.width ?? DEEPFILL_DEFAULT_WIDTH;
    const s = this.inputScale = config.inputScale ?? 1;
    if (!Number.isInteger(c) || c < 1 || !Number.isInteger(w) || w < 1) {
      throw new Error(`DeepFillGenerator: channels and width must be positive integers, got ${c}, ${w}`);
    }
    if (!Number.isInteger(s) || s < 1) {
      throw new RangeError(`DeepFillGenerator: inputScale must be an integer >= 1, got ${s}`);
    }
    const attention = config.contextualAttention ?? currentGpu().adapterClass === "gpu";
    this.stage1 = this.child("stage1", new CoarseStage(c, w));
    this.stage2 = this.child("stage2", new RefinementStage(c, w, attention, config.attentionScale ?? 10));
  }

  get contextualAttention(): boolean {
    return this.stage2.attention;
  }

  /** Both stages: x1 (coarse) and x2 (refined), each [N, C, H, W] in [-1, 1]. */
  forwardStages(x: Tensor): { x1: Tensor; x2: Tensor } {
    checkGeneratorInput("DeepFillGenerator", x, this.channels);
    const s = this.inputScale;
    if (s === 1) return this.#stages(x);
    const { x1, x2 } = this.#stages(upsampleNearest2d(x, s));
    return { x1: avgPool2d(x1, s), x2: avgPool2d(x2, s) };
  }

  #stages(x: Tensor): { x1: Tensor; x2: Tensor } {
    const c = this.channels;
    const image = channels(x, 0, c), mask = channels(x, c + 1, 1);
    const x1 = this.stage1.forward(x);
    // Keep the known pixels, take the coarse guess in the hole.
    const composite = add(mul(x1, mask), mul(image, rsubScalar(mask, 1)));
    const x2 = this.stage2.refine(composite, mask);
    return { x1, x2 };
  }

  /** The refined image x2 (the purifier's output). */
  forward(x: Tensor): Tensor {
    return this.forwardStages(x).x2;
  }

  /** [x1, x2]: the outputs that the reconstruction loss covers, last = final. */
  stageOutputs(x: Tensor): Tensor[] {
    const { x1, x2 } = this.forwardStages(x);
    return [x1, x2];
  }
}
