/**
 * 2-D convolution (PyTorch semantics: NCHW input, [Cout, Cin, kh, kw] weights, groups = 1)
 * with its gradient rule: dx is a transposed convolution (conv2dBackwardData), dw a
 * reduction over output positions (conv2dBackwardFilter), dbias the sum of dy over N, H, W.
 *
 *   y[n, co, oy, ox] = bias[co] + sum over ci, ky, kx of
 *                      w[co, ci, ky, kx] * x[n, ci, oy*s - p + ky*d, ox*s - p + kx*d]
 *   Ho = floor((H + 2p - d(k - 1) - 1) / s) + 1
 *
 * Two kernel variants (see shaders/conv2d_forward.ts): "cpu", register-blocked direct
 * convolutions with weights in uniform buffers (fast on llvmpipe), and "gpu", implicit GEMMs
 * with workgroup-memory tiles. The adapter class picks one; `options.variant` forces it.
 */
import {
  backwardDataGemmShader,
  type ConvGeometry,
  dataGradientPhases,
} from "../../shaders/conv2d_backward_data.ts";
import {
  backwardFilterGemmShader,
  filterGradientShader,
  sumPartialsShader,
} from "../../shaders/conv2d_backward_filter.ts";
import {
  CONV_TUNING,
  directConvShader,
  forwardGemmShader,
  packWeightsShader,
  type Tap,
} from "../../shaders/conv2d_forward.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import type { ChannelMoments } from "./batchnorm.ts";
import { currentGpu } from "../device/runtime.ts";
import { fmt, sameShape, type Shape, ShapeError } from "../tensor/shape.ts";
import { Tensor } from "../tensor/tensor.ts";
import { add } from "./arithmetic.ts";
import { checkFloat } from "./elementwise.ts";
import { fillBits, grid1d, launch, output, params, withOperandTextures } from "./kernel.ts";
import { sum } from "./reduce.ts";

export type Conv2dVariant = "cpu" | "gpu";

export interface Conv2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  /** Kernel variant; by default the adapter's class ("cpu" on llvmpipe/lavapipe). */
  variant?: Conv2dVariant;
}

/** Every size of one convolution, resolved and checked. */
export interface Conv2dGeometry extends ConvGeometry {
  batch: number;
  inC: number;
  inH: number;
  inW: number;
  outC: number;
  outH: number;
  outW: number;
}

function pair(
  op: string,
  name: string,
  v: number | [number, number] | undefined,
  fallback: number,
  min: number,
) {
  const [a, b] = v === undefined ? [fallback, fallback] : typeof v === "number" ? [v, v] : v;
  const ok = (n: number) => Number.isInteger(n) && n >= min;
  if (!ok(a) || !ok(b) || (Array.isArray(v) && v.length !== 2)) {
    throw new ShapeError(
      op,
      `${name} must be ${min === 0 ? "non-negative" : "positive"} integers (a number or [h, w]), got ${
        JSON.stringify(v)
      }`,
    );
  }
  return [a, b];
}

/** Resolves stride/padding/dilation and the output size; throws naming the op and shapes. */
export function conv2dGeometry(
  op: string,
  xShape: Shape,
  wShape: Shape,
  options: Conv2dOptions = {},
): Conv2dGeometry {
  if (xShape.length !== 4) {
    throw new ShapeError(op, `input must be [N, Cin, H, W], got ${fmt(xShape)}`);
  }
  if (wShape.length !== 4) {
    throw new ShapeError(op, `weight must be [Cout, Cin, kh, kw], got ${fmt(wShape)}`);
  }
  const [batch, inC, inH, inW] = xShape;
  const [outC, wC, kh, kw] = wShape;
  if (wC !== inC) {
    throw new ShapeError(
      op,
      `input ${fmt(xShape)} has ${inC} channels but weight ${fmt(wShape)} expects ${wC} ` +
        `(weight is [Cout, Cin, kh, kw]; groups are not supported)`,
    );
  }
  if (kh < 1 || kw < 1 || outC < 1 || wC < 1) {
    throw new ShapeError(op, `weight ${fmt(wShape)} must have Cout, Cin, kh, kw >= 1`);
  }
  const [strideY, strideX] = pair(op, "stride", options.stride, 1, 1);
  const [padY, padX] = pair(op, "padding", options.padding, 0, 0);
  const [dilY, dilX] = pair(op, "dilation", options.dilation, 1, 1);
  const spanY = dilY * (kh - 1) + 1, spanX = dilX * (kw - 1) + 1;
  if (spanY > inH + 2 * padY || spanX > inW + 2 * padX) {
    throw new ShapeError(
      op,
      `kernel ${kh}x${kw} with dilation [${dilY}, ${dilX}] spans ${spanY}x${spanX}, larger than the ` +
        `padded input ${inH + 2 * padY}x${inW + 2 * padX} (input ${fmt(xShape)}, weight ${fmt(wShape)}, ` +
        `padding [${padY}, ${padX}])`,
    );
  }
  const outH = Math.floor((inH + 2 * padY - spanY) / strideY) + 1;
  const outW = Math.floor((inW + 2 * padX - spanX) / strideX) + 1;
  return { batch, inC, inH, inW, outC, outH, outW, kh, kw, strideY, strideX, padY, padX, dilY, dilX };
}

function variantOf(options: Conv2dOptions): Conv2dVariant {
  return options.variant ?? currentGpu().adapterClass;
}

export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor, options: Conv2dOptions = {}): Tensor {
  return convolve(x, weight, bias, options, false).y;
}

/**
 * conv2d that also returns the per-channel moments of its output, for a batchnorm in training
 * that follows (see ChannelMoments): the direct ("cpu") kernel computes them from the values it
 * stores, so the batchnorm skips its statistics pass over y. Other variants return none (the
 * batchnorm then reads y). The caller owns `moments`.
 */
export function conv2dWithMoments(
  x: Tensor,
  weight: Tensor,
  bias?: Tensor,
  options: Conv2dOptions = {},
): { y: Tensor; moments?: ChannelMoments } {
  return convolve(x, weight, bias, options, true);
}

function convolve(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  options: Conv2dOptions,
  withMoments: boolean,
): { y: Tensor; moments?: ChannelMoments } {
  const op = "conv2d";
  checkFloat(op, x, weight, ...(bias ? [bias] : []));
  const g = conv2dGeometry(op, x.shape, weight.shape, options);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== g.outC)) {
    throw new ShapeError(op, `bias ${fmt(bias.shape)} must be [${g.outC}] for weight ${fmt(weight.shape)}`);
  }
  // Decided now, while the tape knows which inputs are tracked: attacks need only dx, a
  // first layer needs no dx, frozen layers need no dw.
  const wantX = needsGrad(x), wantW = needsGrad(weight), wantB = bias ? needsGrad(bias) : false;
  const y = output(op, [g.batch, g.outC, g.outH, g.outW]);
  // cpu: the data gradient's packed weights, made with the forward's (the weights do not
  // change in between; owned by the recording scope if the backward never runs).
  let dataPack: PackedWeights | undefined, moments: ChannelMoments | undefined;
  if (y.size > 0) {
    if (variantOf(options) === "cpu") {
      ({ dataPack, moments } = forwardDirect(op, x, weight, bias, y, g, wantX, withMoments));
    } else forwardGemm(op, x, weight, bias, y, g);
  }
  const inputs = bias ? [x, weight, bias] : [x, weight];
  const out = record(op, inputs, y, (dy, takeGradient) => {
    // The pack is consumed by the first backward; a second one through this graph packs again.
    const pack = dataPack?.scratch.isDisposed ? undefined : dataPack;
    return [
      wantX ? backwardData(dy, weight, x.shape, options, takeGradient(0), pack) : null,
      wantW ? conv2dBackwardFilter(x, dy, weight.shape, options) : null,
      ...(bias ? [wantB ? sum(dy, { axes: [0, 2, 3] }) : null] : []),
    ];
  }, [x, weight]); // the bias's gradient needs only dy
  return { y: out, moments };
}

function checkDy(op: string, dy: Tensor, g: Conv2dGeometry): void {
  const want = [g.batch, g.outC, g.outH, g.outW];
  if (dy.rank !== 4 || dy.shape.some((d, i) => d !== want[i])) {
    throw new ShapeError(op, `dy ${fmt(dy.shape)} must be the conv output shape ${fmt(want)}`);
  }
}

/**
 * dL/dx of conv2d: a transposed convolution of dy with the weights. With `addTo` (a gradient
 * of x accumulated so far, owned by the caller), the result is added into it and it is returned:
 * the direct kernel adds in its stores, so no separate add pass runs.
 */
export function conv2dBackwardData(
  dy: Tensor,
  weight: Tensor,
  xShape: Shape,
  options: Conv2dOptions = {},
  addTo?: Tensor,
): Tensor {
  return backwardData(dy, weight, xShape, options, addTo);
}

/** conv2dBackwardData, on cpu with the weights packed already when `packed` is given (consumed). */
function backwardData(
  dy: Tensor,
  weight: Tensor,
  xShape: Shape,
  options: Conv2dOptions,
  addTo?: Tensor,
  packed?: PackedWeights,
): Tensor {
  const op = "conv2d.backwardData";
  checkFloat(op, dy, weight);
  const g = conv2dGeometry(op, xShape, weight.shape, options);
  checkDy(op, dy, g);
  if (addTo && !sameShape(addTo.shape, xShape)) {
    throw new ShapeError(op, `addTo ${fmt(addTo.shape)} must be the input shape ${fmt(xShape)}`);
  }
  try {
    if (addTo && variantOf(options) === "cpu") {
      if (addTo.size > 0) backwardDataDirect(op, dy, weight, addTo, g, true, packed);
      return addTo;
    }
    const dx = output(op, xShape);
    if (dx.size > 0) {
      if (variantOf(options) === "cpu") backwardDataDirect(op, dy, weight, dx, g, false, packed);
      else {
        const { p, grid } = gemmLaunch(g, g.inC, g.batch * g.inH * g.inW, g.outC * g.kh * g.kw);
        launch(op, backwardDataGemmShader, [dy, weight, dx, p], grid);
      }
    }
    return addTo ? addInto(addTo, dx) : dx;
  } finally {
    packed?.scratch.dispose();
  }
}

/** addTo + dx as a new tensor; both inputs are consumed. */
function addInto(addTo: Tensor, dx: Tensor): Tensor {
  const total = add(addTo, dx);
  addTo.dispose();
  dx.dispose();
  return total;
}

/** dL/dw of conv2d: sum over n, oy, ox of dy times the input patch (two-pass, deterministic). */
export function conv2dBackwardFilter(
  x: Tensor,
  dy: Tensor,
  weightShape: Shape,
  options: Conv2dOptions = {},
): Tensor {
  const op = "conv2d.backwardFilter";
  checkFloat(op, x, dy);
  const g = conv2dGeometry(op, x.shape, weightShape, options);
  checkDy(op, dy, g);
  const dw = output(op, weightShape);
  if (dy.size === 0) fillBits(dw, 0, op); // an empty batch: no terms in the sum
  else if (variantOf(options) === "cpu") backwardFilterDirect(op, x, dy, dw, g);
  else backwardFilterGemm(op, x, dy, dw, g);
  return dw;
}

// ---------------------------------------------------------------------------------------
// CPU variant: direct convolutions with packed uniform weights.

/** Output-channel tile of the direct kernel for a given number of output channels. */
function directCoTile(channels: number): number {
  return channels >= 16 ? 16 : channels > 4 ? 8 : 4;
}

interface PackedWeights {
  scratch: Tensor;
  coChunk: number;
  ciChunk: number;
  aChunks: number;
  bChunks: number;
  /** Floats between chunk starts. */
  stride: number;
}

/** Which packed layout: the forward pass's, or the data gradient's (`transposed`). */
interface PackLayout {
  transposed: boolean;
  /** Output-channel tile of the kernel that reads it (chunks hold whole tiles). */
  coTile: number;
}

/** The chunks of one packed layout of weights [Cout, Cin, kh, kw] (see packWeights). */
function packPlan(weightShape: Shape, { transposed, coTile }: PackLayout): Omit<PackedWeights, "scratch"> {
  const [cout, cin, kh, kw] = weightShape;
  const taps = kh * kw;
  const max = CONV_TUNING.uniformFloats;
  const [a, b] = transposed ? [cout, cin] : [cin, cout];
  const bPadded = Math.ceil(b / coTile) * coTile;
  let coChunk: number, ciChunk: number;
  if (a * taps * coTile <= max) {
    ciChunk = a;
    coChunk = Math.min(bPadded, coTile * Math.floor(max / (a * taps * coTile)));
  } else {
    coChunk = coTile;
    ciChunk = Math.floor(max / (taps * coTile));
  }
  const aChunks = Math.ceil(a / ciChunk), bChunks = Math.ceil(b / coChunk);
  const align = currentGpu().limits.minUniformBufferOffsetAlignment / 4;
  const stride = Math.ceil((ciChunk * taps * coChunk) / align) * align;
  return { coChunk, ciChunk, aChunks, bChunks, stride };
}

/**
 * Data-gradient packs kept from a forward pass to its backward at most this many 64 KiB chunks
 * (1 MiB; ResNet-8's largest is 4): a wide layer's pack would hold many MiB per layer for the
 * whole forward, so those pack again in the backward instead.
 */
const MAX_HELD_DATA_CHUNKS = 16;

/**
 * Packs weights into uniform chunks of <= 64 KiB: input channels (a) x taps x output channels
 * (b). The forward pass has a = Cin, b = Cout; the data gradient a = Cout, b = Cin
 * (`transposed`). Prefer wide output-channel chunks (fewer passes over the input), and split
 * input channels only when even one output tile does not fit (its chunks then accumulate).
 * Every layout asked for is written by one dispatch.
 */
function packWeights(op: string, weight: Tensor, layouts: PackLayout[]): PackedWeights[] {
  const [cout, cin, kh, kw] = weight.shape;
  const taps = kh * kw;
  const packs = layouts.map((layout): PackedWeights => {
    const plan = packPlan(weight.shape, layout);
    // Every binding is a full 64 KiB window, so the scratch extends that far past the last chunk.
    const floats = (plan.aChunks * plan.bChunks - 1) * plan.stride + CONV_TUNING.uniformFloats;
    return { ...plan, scratch: Tensor.empty([floats], "f32", op) };
  });
  const source = packWeightsShader(
    packs.map((k, i) => ({
      taps,
      ciChunk: k.ciChunk,
      coChunk: k.coChunk,
      transposed: layouts[i].transposed,
    })),
  );
  const p = params().u32(cout, cin, 0, 0);
  for (const k of packs) p.u32(k.stride, k.aChunks, k.bChunks, 0);
  launch(op + ".pack", source, [weight, ...packs.map((k) => k.scratch), p], [
    Math.ceil(Math.max(...packs.map((k) => k.ciChunk * taps * k.coChunk)) / 256),
    Math.max(...packs.map((k) => k.aChunks)),
    packs.reduce((sum, k) => sum + k.bChunks, 0),
  ]);
  return packs;
}

/**
 * One output grid of the direct kernel: the forward pass, a strided conv's data gradient in one
 * pass (phases = the stride), or one of its phases.
 */
interface DirectPass {
  /** The taps of each phase (see DirectConvSpec). */
  taps: Tap[][];
  phasesY: number;
  phasesX: number;
  strideY: number;
  strideX: number;
  /** Grid of output positions and where it lands in the output tensor. */
  qH: number;
  qW: number;
  stepY: number;
  stepX: number;
  offY: number;
  offX: number;
}

function runDirect(
  op: string,
  input: Tensor,
  packed: PackedWeights,
  out: Tensor,
  bias: Tensor | undefined,
  passes: DirectPass[],
  tapCount: number,
  /** Add to what `out` holds (a gradient accumulated so far) instead of overwriting it. */
  accumulate = false,
  /** Also return the output's per-tile channel moments (a single forward pass only). */
  withMoments = false,
): ChannelMoments | undefined {
  const gpu = currentGpu();
  const [batch, inC, inH, inW] = input.shape;
  const [, outC, outH, outW] = out.shape;
  const coTile = directCoTile(outC);
  const WG = CONV_TUNING.directWorkgroup;
  // Whole output rows in vec4s: the grid starts at column 0 with step 1 and the width divides by 4.
  const vec4Store = (pass: DirectPass) =>
    outW % 4 === 0 && pass.qW === outW && pass.stepX === 1 && pass.offX === 0;
  const accumulation = packed.aChunks > 1 ? "param" : accumulate ? "always" : "never";
  // A gradient accumulated so far is read through an operand texture, not from out itself.
  const addendTexture = accumulation === "always" && passes.every(vec4Store);
  const operands = addendTexture ? [input, out] : [input];
  return withOperandTextures(true, operands, [inW % 4 === 0, true], ([x, addend], xTexture) => {
    let moments: ChannelMoments | undefined;
    for (const pass of passes) {
      if (pass.qH === 0 || pass.qW === 0) continue;
      // A phase no tap reaches adds nothing to a gradient accumulated so far.
      if (accumulation === "always" && pass.taps.flat().length === 0) continue;
      // Wide grids take 16x4 tiles: a weight load (a uniform gather on llvmpipe) serves every pixel
      // of the tile and an input load every channel, and loads, not FMAs, set this kernel's speed.
      // Measured against 8x2 tiles (forward, 16 channels per invocation): 64->64 @32x32
      // 37.9 -> 49.8 GFLOP/s, 32->32 @16x16 31.9 -> 45.1, 16->16 @32x32 25.1 -> 32.6. Not for a
      // data-gradient pass of one phase of a strided conv (1-4 taps each): no faster there. A
      // pass holding every phase (stride 2 or 4) has every tap, and takes them.
      const wide = pass.qW >= 16 && pass.taps.flat().length === tapCount;
      // Rows of 20, 24 or 28 columns would leave a 16-wide tile partly outside the grid (28:
      // 4 of 32 columns computed for nothing): such rows are one tile wide, with fewer rows.
      // Measured on [100, C, 28, 28] 3x3 (ABAB in one process, noisy VM): forward 1.13-1.14x,
      // data gradient 1.04-1.2x; compiles as fast as the 16-column tile.
      const wholeRow = wide && pass.qW > 16 && pass.qW < 32 && pass.qW % 4 === 0 &&
        batch * pass.qH * pass.qW >= CONV_TUNING.wholeRowMinPixels;
      let pxTile = wholeRow ? pass.qW : wide ? 16 : pass.qW >= 8 ? 8 : 4;
      // vec4 input loads need each tile's input origin (pxTile / phasesX columns apart for a
      // phased pass) 4-aligned: 4 columns of input per phase at least.
      if (inW % 4 === 0) pxTile = Math.max(pxTile, 4 * pass.phasesX);
      // Small maps (<= 8 rows) take 4-row tiles: ~1.4x on 7x7 and 8x8 maps (measured).
      let rows = (wide || pass.qH <= 8) && pass.qH >= 4 ? 4 : pass.qH >= 2 ? 2 : 1;
      if (wholeRow) rows = Math.min(rows, Math.floor(64 / pass.qW));
      // Tiles hold whole phases (phases divide 4: see backwardDataDirect). 8-row tiles for phased
      // passes ran 1.09-1.10x faster on ResNet-8's stride-2 3x3 data gradients (paired) but took
      // ~66 s each to compile on lavapipe against ~17 s for 4 rows (2048 accumulators instead of
      // 1024): minutes on a first run and in CI, so tiles stay at 4 rows.
      const pyTile = Math.ceil(rows / pass.phasesY) * pass.phasesY;
      const source = directConvShader({
        coTile,
        pxTile,
        pyTile,
        strideY: pass.strideY,
        strideX: pass.strideX,
        phasesY: pass.phasesY,
        phasesX: pass.phasesX,
        taps: pass.taps,
        tapCount,
        vec4: inW % 4 === 0,
        vec4Store: vec4Store(pass),
        xTexture,
        bias: bias !== undefined,
        accumulate: accumulation,
        addendTexture: addendTexture && xTexture,
        moments: withMoments,
      });
      const tilesX = Math.ceil(pass.qW / pxTile), tilesY = Math.ceil(pass.qH / pyTile);
      const tileCount = batch * tilesX * tilesY;
      if (withMoments) moments = { partials: output(op, [outC, tileCount, 4]), parts: tileCount };
      const groups = Math.ceil(tileCount / WG);
      const groupsX = Math.min(groups, gpu.limits.maxComputeWorkgroupsPerDimension);
      const groupsY = Math.ceil(groups / groupsX);
      for (let bc = 0; bc < packed.bChunks; bc++) {
        const coStart = bc * packed.coChunk;
        const coCount = Math.min(packed.coChunk, outC - coStart);
        for (let ac = 0; ac < packed.aChunks; ac++) {
          const ciStart = ac * packed.ciChunk;
          // Rows of the kernel's Params struct.
          const p = params()
            .u32(tilesX, tilesY, tileCount, groupsX)
            .u32(inC, ciStart, Math.min(packed.ciChunk, inC - ciStart), inH)
            .u32(inW, outC, coStart, coCount)
            .u32(pass.qH, pass.qW, outH, outW)
            .u32(pass.stepY, pass.stepX, pass.offY, pass.offX)
            .u32(packed.coChunk / 4, ac > 0 || accumulate ? 1 : 0, ac === packed.aChunks - 1 ? 1 : 0, 0);
          const weights = {
            buffer: packed.scratch.buffer,
            size: CONV_TUNING.uniformFloats * 4,
            offset: (bc * packed.aChunks + ac) * packed.stride * 4,
          };
          const bindings = [
            x,
            weights,
            out,
            p,
            ...(bias ? [bias] : []),
            ...(moments ? [moments.partials] : []),
            ...(addendTexture && xTexture ? [addend] : []),
          ];
          launch(op, source, bindings, [groupsX, groupsY, Math.ceil(coCount / coTile)]);
        }
      }
    }
    return moments;
  });
}

/** Every (ky, kx) tap: input offset ky*d - p, kx*d - p from (oy*s, ox*s). */
function forwardTaps(g: Conv2dGeometry): Tap[] {
  const taps: Tap[] = [];
  for (let ky = 0; ky < g.kh; ky++) {
    for (let kx = 0; kx < g.kw; kx++) {
      taps.push({ row: ky * g.dilY - g.padY, col: kx * g.dilX - g.padX, weight: ky * g.kw + kx });
    }
  }
  return taps;
}

function forwardDirect(
  op: string,
  x: Tensor,
  w: Tensor,
  bias: Tensor | undefined,
  y: Tensor,
  g: Conv2dGeometry,
  /**
   * Also pack the weights for the data gradient, in the same dispatch, and return them (when
   * they are small: MAX_HELD_DATA_CHUNKS).
   */
  packForData: boolean,
  withMoments = false,
): { dataPack?: PackedWeights; moments?: ChannelMoments } {
  const taps = forwardTaps(g);
  const layouts = [{ transposed: false, coTile: directCoTile(g.outC) }];
  const dataLayout = { transposed: true, coTile: directCoTile(g.inC) };
  const dataPlan = packPlan(w.shape, dataLayout);
  if (packForData && dataPlan.aChunks * dataPlan.bChunks <= MAX_HELD_DATA_CHUNKS) layouts.push(dataLayout);
  const [packed, dataPack] = packWeights(op, w, layouts);
  const pass = {
    taps: [taps],
    phasesY: 1,
    phasesX: 1,
    strideY: g.strideY,
    strideX: g.strideX,
    qH: g.outH,
    qW: g.outW,
    stepY: 1,
    stepX: 1,
    offY: 0,
    offX: 0,
  };
  const moments = runDirect(op, x, packed, y, bias, [pass], g.kh * g.kw, false, withMoments);
  packed.scratch.dispose();
  return { dataPack, moments };
}

function backwardDataDirect(
  op: string,
  dy: Tensor,
  w: Tensor,
  dx: Tensor,
  g: Conv2dGeometry,
  accumulate: boolean,
  prepacked?: PackedWeights,
) {
  const packed = prepacked ?? packWeights(op, w, [{ transposed: true, coTile: directCoTile(g.inC) }])[0];
  const phases = dataGradientPhases(g);
  const oneStep = { strideY: 1, strideX: 1 };
  // Strides that divide 4 divide every tile (4, 8 or 16 columns; rows rounded up): all phases
  // in one pass, so each dy load serves every tap. Other strides: one pass per phase.
  // Paired against one pass per phase on ResNet-8's stride-2 layers: 3x3 1.2x, 1x1 1.9-2.4x.
  const fused = 4 % g.strideY === 0 && 4 % g.strideX === 0;
  const passes: DirectPass[] = fused
    ? [{
      ...oneStep,
      taps: phases.map((ph) => ph.taps),
      phasesY: g.strideY,
      phasesX: g.strideX,
      qH: g.inH,
      qW: g.inW,
      stepY: 1,
      stepX: 1,
      offY: 0,
      offX: 0,
    }]
    : phases.map((ph) => ({
      ...oneStep,
      taps: [ph.taps],
      phasesY: 1,
      phasesX: 1,
      qH: Math.max(0, Math.ceil((g.inH - ph.ry) / g.strideY)),
      qW: Math.max(0, Math.ceil((g.inW - ph.rx) / g.strideX)),
      stepY: g.strideY,
      stepX: g.strideX,
      offY: ph.ry,
      offX: ph.rx,
    }));
  runDirect(op, dy, packed, dx, undefined, passes, g.kh * g.kw, accumulate);
  packed.scratch.dispose();
}

/**
 * Register block of the filter-gradient kernel. A step loads coTile dy vectors and, with x
 * blocks carried between steps (aligned rows, stride 1 or 2), 3·ciTile (3x3, stride 1) or
 * 6·ciTile (stride 2) x vectors, for coTile·ciTile·taps·4 FMAs. Loads cost far more than FMAs
 * on llvmpipe, so the block is shared between both kinds of channel: 8x2 measured 1.2x faster
 * than 16x1 on the ResNet-8 stride-1 layers and 1.1x on the stride-2 ones, and 8x4 (288
 * accumulators for 3x3) another 1.12-1.21x on its stride-1 layers and 16 -> 32 stride 2
 * (paired; 8x8 maps at stride 2 unchanged; it compiles in ~1.5 s instead of ~0.5). 16x4 (576
 * accumulators) was another 1.09-1.18x on 16- and 32-wide rows (0.79x on the unrolled 8-wide
 * ones) but takes 4-11 s to compile per shader: the model tests' cold compiles grew by minutes,
 * too much for CI's budget, so only large convs take it (`filterWideBlockMinPositions` in
 * CONV_TUNING), where it pays for its compile. Where every x block is loaded each step
 * (unaligned rows), x loads dominate and a block of output channels saves more.
 */
function filterTiles(g: Conv2dGeometry): { coTile: number; ciTile: number } {
  const taps = g.kh * g.kw;
  const budget = 160;
  const carried = g.inW % 4 === 0 && g.strideX <= 2;
  // A 1x1 kernel has one tap: 8x2 would be 16 accumulators per ~12 loads, and the wider block
  // below measured 1.5-1.6x faster on ResNet-8's 1x1 stride-2 shortcuts.
  if (taps > 1 && carried && g.outC >= 8) {
    if (wideFilterBlockPays(g, taps)) return { coTile: 16, ciTile: 4 };
    if (8 * 4 * taps <= 288 && g.inC >= 4) return { coTile: 8, ciTile: 4 };
    // An RGB stem: 3 input channels in one block, none wasted (1.28x over 8x2, paired, on
    // ResNet-8's 3 -> 16 @32 layer).
    if (g.inC === 3) return { coTile: 8, ciTile: 3 };
    if (8 * 2 * taps <= budget && g.inC >= 2) return { coTile: 8, ciTile: 2 };
  }
  let coTile = 16 * taps <= budget ? 16 : 8 * taps <= budget ? 8 : 4;
  coTile = Math.min(coTile, g.outC);
  let ciTile = 1;
  while (ciTile < 8 && coTile * ciTile * 2 * taps <= budget) ciTile *= 2;
  return { coTile, ciTile: Math.min(ciTile, g.inC) };
}

/**
 * The 16x4 filter block, where it measured faster (see CONV_TUNING.filterWideBlockMinPositions):
 * large convs with strided rows, or 64+ input channels, whose rows the generic walk carries.
 */
function wideFilterBlockPays(g: Conv2dGeometry, taps: number): boolean {
  return taps <= 9 && g.outC >= 16 && g.inC >= 4 && g.outW > CONV_TUNING.filterUnrolledRow &&
    (g.strideY > 1 || g.inC >= 64) &&
    g.batch * g.outH * g.outW >= CONV_TUNING.filterWideBlockMinPositions;
}

/**
 * Splits of the position reduction: at least 256 invocations (channel blocks x splits, 32
 * SIMD groups) to keep every core busy, and at most `filterPositionsPerSplit` positions
 * summed in sequence by one invocation.
 */
function splitRows(totalRows: number, rowLength: number, lanes: number, multiple = 1) {
  const rowsCap = Math.max(1, Math.floor(CONV_TUNING.filterPositionsPerSplit / rowLength));
  const minInvocations = 256;
  const wanted = Math.min(
    totalRows,
    Math.max(Math.ceil(minInvocations / lanes), Math.ceil(totalRows / rowsCap)),
  );
  const rowsPerSplit = Math.ceil(totalRows / wanted / multiple) * multiple;
  return { splits: Math.ceil(totalRows / rowsPerSplit), rowsPerSplit };
}

/** splitRows over whole images (rows per split a multiple of the output height). */
function imageSplits(g: Conv2dGeometry, lanes: number) {
  const { splits, rowsPerSplit: images } = splitRows(g.batch, g.outH * g.outW, lanes);
  return { splits, rowsPerSplit: images * g.outH };
}

function backwardFilterDirect(op: string, x: Tensor, dy: Tensor, dw: Tensor, g: Conv2dGeometry) {
  const { coTile, ciTile } = filterTiles(g);
  // 4 columns per step measured fastest (8 only adds live values); vec4 dy when rows are whole steps.
  const pxStep = 4;
  const taps = forwardTaps(g);
  // Short aligned rows: unrolled with constant columns, image by image with x rows carried
  // down (paired A/B against the generic loop: see CONV_TUNING.filterUnrolledRow).
  const vec4X = g.inW % 4 === 0, vec4Dy = g.outW % pxStep === 0;
  const row = vec4X && vec4Dy && g.outW <= CONV_TUNING.filterUnrolledRow
    ? { steps: g.outW / pxStep, inW: g.inW }
    : undefined;
  // Two output rows per step on the generic walk at stride 1 (4 x rows loaded for both, not 6;
  // longer FMA chains). Paired A/B on lavapipe: ResNet-8's 16->16 @32 filter gradient 1.14x,
  // 32->32 @16 1.09x; stride 2 (5 rows for 6) and 1x1 kernels were 0.92x, so they keep one.
  // Its shader compiles in ~2.6 s instead of ~1.6.
  const rowsPerStep = !row && g.strideY === 1 && taps.length > 1 && g.outH % 2 === 0 ? 2 : 1;
  withOperandTextures(true, [x, dy], [vec4X, vec4Dy], (operands, textures) => {
    const source = filterGradientShader({
      coTile,
      ciTile,
      pxStep,
      rowsPerStep,
      strideY: g.strideY,
      strideX: g.strideX,
      taps,
      vec4X,
      vec4Dy,
      row,
      textures,
    });
    const coBlocks = Math.ceil(g.outC / coTile);
    const lanes = coBlocks * Math.ceil(g.inC / ciTile);
    const totalRows = g.batch * g.outH;
    // Unrolled short rows walk whole images (rows carried down), so splits are whole images.
    const { splits, rowsPerSplit } = row
      ? imageSplits(g, lanes)
      : splitRows(totalRows, g.outW, lanes, rowsPerStep);
    const invocations = lanes * splits;
    const p = params()
      .u32(g.batch, g.inC, g.inH, g.inW)
      .u32(g.outC, g.outH, g.outW, coBlocks)
      .u32(lanes, rowsPerSplit, totalRows, invocations);
    const grid = grid1d(invocations, CONV_TUNING.filterWorkgroup);
    reduceSplits(op, dw, splits, (partial) => launch(op, source, [...operands, partial, p], grid));
  });
}

/** Runs `produce` into dw directly (one split) or into partials summed into dw. */
function reduceSplits(op: string, dw: Tensor, splits: number, produce: (partial: Tensor) => void): void {
  if (splits === 1) {
    produce(dw);
    return;
  }
  const partial = Tensor.empty([splits, dw.size], "f32", op);
  produce(partial);
  const [gx, gy] = grid1d(dw.size, 256);
  launch(op + ".sum", sumPartialsShader, [partial, dw, params().u32(dw.size, splits, gx, 0)], [gx, gy]);
  partial.dispose();
}

// ---------------------------------------------------------------------------------------
// GPU variant: implicit GEMMs with workgroup-memory tiles.

/** Uniform block and grid of a tiled-GEMM conv kernel (M x N outputs, K split `splits` ways). */
function gemmLaunch(g: Conv2dGeometry, m: number, n: number, k: number, splits = 1) {
  const { gemmTileM, gemmTileN, gemmTileK } = CONV_TUNING;
  const kSplit = Math.ceil(k / splits / gemmTileK) * gemmTileK;
  const used = Math.ceil(k / kSplit);
  const columnTiles = Math.ceil(n / gemmTileN);
  const max = currentGpu().limits.maxComputeWorkgroupsPerDimension;
  const groupsX = Math.min(columnTiles, max);
  const columnGroups = Math.ceil(columnTiles / groupsX);
  const p = params()
    .u32(g.batch, g.inC, g.inH, g.inW)
    .u32(g.outC, g.outH, g.outW, g.kh)
    .u32(g.kw, g.strideY, g.strideX, g.dilY)
    .u32(g.dilX).i32(g.padY, g.padX).u32(0)
    .u32(m, n, k, kSplit)
    .u32(groupsX, used, 0, 0);
  return { p, splits: used, grid: [groupsX, Math.ceil(m / gemmTileM), used * columnGroups] };
}

function forwardGemm(
  op: string,
  x: Tensor,
  w: Tensor,
  bias: Tensor | undefined,
  y: Tensor,
  g: Conv2dGeometry,
) {
  const { p, grid } = gemmLaunch(g, g.outC, g.batch * g.outH * g.outW, g.inC * g.kh * g.kw);
  launch(op, forwardGemmShader(bias !== undefined), bias ? [x, w, y, p, bias] : [x, w, y, p], grid);
}

function backwardFilterGemm(op: string, x: Tensor, dy: Tensor, dw: Tensor, g: Conv2dGeometry) {
  const m = g.outC, n = g.inC * g.kh * g.kw, k = g.batch * g.outH * g.outW;
  const tiles = Math.ceil(m / CONV_TUNING.gemmTileM) * Math.ceil(n / CONV_TUNING.gemmTileN);
  // Split the long reduction for enough workgroups and bounded sequential sums, keeping
  // >= 256 terms per split.
  const perSplit = CONV_TUNING.filterPositionsPerSplit;
  const wanted = Math.max(
    1,
    Math.min(Math.max(Math.ceil(64 / tiles), Math.ceil(k / perSplit)), Math.floor(k / 256)),
  );
  const { p, splits, grid } = gemmLaunch(g, m, n, k, wanted);
  reduceSplits(op, dw, splits, (partial) => launch(op, backwardFilterGemmShader, [x, dy, partial, p], grid));
}
