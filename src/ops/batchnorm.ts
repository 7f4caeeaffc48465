/**
 * 2-D batch normalisation (NCHW, statistics per channel), with an optional fused ReLU.
 *
 * Training: normalise with the batch mean and biased variance, save (mean, invstd) for the
 * backward, and update the running statistics in place (PyTorch semantics, unbiased
 * variance). Eval: normalise with the running statistics. The kernels and the math are in
 * shaders/batchnorm.ts; this file chooses sizes, dispatches and holds the gradient rule.
 *
 * Cost: forward = 2 reads of x + 1 write of y; backward = 2 reads of x and dy + 1 write of dx.
 * On llvmpipe, training with >= 8 channels does each direction in one dispatch (`appliesInOne`).
 */
import {
  batchNormBackwardDataShader,
  batchNormBackwardFinalizeShader,
  type BatchNormVariant,
  batchStatsFinalizeShader,
  BN_WORKGROUP,
  channelSumsShader,
  type ChannelSumsSpec,
  FINALIZE_WORKGROUP,
  normalizeShader,
  REDUCE_WORKGROUP,
  runningStatsShader,
  type StreamSpec,
} from "../../shaders/batchnorm.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { currentGpu } from "../device/runtime.ts";
import { fmt, sameShape, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkFloat, mapElements } from "./elementwise.ts";
import { grid1d, type KernelBinding, launch, output, params, withOperandTextures } from "./kernel.ts";

export interface BatchNormOptions {
  /** Batch statistics (and running-stat update) when true; running statistics when false. */
  training: boolean;
  /** Weight of the batch statistics in the running-stat update (PyTorch default 0.1). */
  momentum?: number;
  /** Added to the variance before the square root (default 1e-5). */
  eps?: number;
  /** Apply ReLU to the output, fused into the same pass (and its mask into the backward). */
  relu?: boolean;
  /**
   * Added to the normalised output before the ReLU, in the same pass: a residual block's join
   * relu(bn(x) + shortcut) without writing and re-reading bn(x). Same shape as x;
   * differentiable (its gradient is the output's gradient, masked by the ReLU).
   */
  residual?: Tensor;
  /**
   * Training: the per-channel moments of x from its producer (conv2dWithMoments), so the
   * statistics need no pass over x. Taken where the statistics are finished in the pass that
   * normalises (llvmpipe, 8+ channels); elsewhere x is read as usual. Not differentiated: the
   * gradient rule treats the batch statistics as functions of x either way.
   */
  moments?: ChannelMoments;
}

/**
 * Per-channel moments of a tensor [N, C, H, W], in parts: `partials` [C, parts, 4] holds
 * (count, mean, M2, 0) of each part's values, M2 = Σ (v − mean)². A kernel that holds the values
 * anyway (the direct conv, as it stores its output) writes them; merging them costs a few
 * operations per part instead of a pass over the tensor.
 */
export interface ChannelMoments {
  partials: Tensor;
  parts: number;
}

/**
 * Kernel variant: "cpu" (barrier-free reductions and runs of units per invocation, for
 * llvmpipe) or "gpu" (workgroup tree reductions, one unit per invocation). `null` picks by
 * adapter class; tests force each one.
 */
export const batchNormTuning: { variant: BatchNormVariant | null } = { variant: null };

function variant(): BatchNormVariant {
  return batchNormTuning.variant ?? currentGpu().adapterClass;
}

/** How the N·C·H·W elements are cut into units (vec4 when a plane holds a multiple of 4). */
interface Layout {
  n: number;
  channels: number;
  /** Elements per channel, N·H·W. */
  count: number;
  vec4: boolean;
  unitsPerPlane: number;
  unitsPerChannel: number;
  units: number;
  /** How the streaming passes cut the units (shaders/batchnorm.ts StreamSpec). */
  stream: StreamSpec;
}

function layoutOf(x: Tensor): Layout {
  const [n, channels, h, w] = x.shape;
  const plane = h * w;
  const vec4 = plane % 4 === 0;
  const unitsPerPlane = vec4 ? plane / 4 : plane;
  return {
    n,
    channels,
    count: n * plane,
    vec4,
    unitsPerPlane,
    unitsPerChannel: n * unitsPerPlane,
    units: n * channels * unitsPerPlane,
    stream: streamPlan(vec4, unitsPerPlane),
  };
}

/**
 * Streaming passes on llvmpipe: 4 units per invocation, or the first of 2, 3, 5, 7 that divides
 * a plane (runs inside one channel load its constants once: 7x7 maps take runs of 7); 4 with
 * per-unit channel lookups when none does.
 */
function streamPlan(vec4: boolean, unitsPerPlane: number): StreamSpec {
  // A real GPU wants neighbouring invocations on neighbouring units (coalesced): one each.
  if (variant() === "gpu") return { vec4, run: 1, aligned: true };
  // (8 units per invocation measured no faster: paired A/B 0.98-1.03x on ResNet-8's layers.
  // The per-unit lookups read four storage values and divide: on 7x7 maps of the attack
  // pipeline, [100, 64, 7, 7], a pass took 7.1-8.3 ms, with runs of 7 2.2-2.8.)
  const run = [4, 2, 3, 5, 7].find((r) => unitsPerPlane % r === 0);
  return run ? { vec4, run, aligned: true } : { vec4, run: 4, aligned: false };
}

/**
 * Lanes and partial sums per channel.
 *   cpu: one lane per run of 32 units (or 16 / 8 / 4 when that divides a plane, so runs never
 *        cross a plane), one partial per lane: no barriers at all. On llvmpipe short fixed
 *        runs beat long strided loops ~2x (measured); 32 beat 16 by 1.04-1.11x (paired A/B,
 *        batchnorm forward + backward on 32x32 and 16x16 planes).
 *   gpu: 256-lane workgroups, each lane ~8+ units, up to 64 workgroups (partials) per channel.
 */
function reductionPlan(l: Layout, v: BatchNormVariant) {
  const u = l.unitsPerChannel;
  if (v === "gpu") {
    const wg = REDUCE_WORKGROUP.gpu;
    const parts = Math.max(1, Math.min(64, Math.ceil(u / (wg * 8))));
    return { lanes: parts * wg, parts, run: 0, aligned: false, grid: [parts, l.channels] };
  }
  let run = [32, 16, 8, 4].find((r) => l.unitsPerPlane % r === 0) ?? 16;
  // Huge channels: longer runs, so the finalize adds at most 4096 partials per channel.
  if (u > run * MAX_CPU_PARTS) run = Math.ceil(u / MAX_CPU_PARTS);
  const aligned = l.unitsPerPlane % run === 0;
  const lanes = Math.ceil(u / run);
  return { lanes, parts: lanes, run, aligned, grid: grid1d(l.channels * lanes, REDUCE_WORKGROUP.cpu) };
}

const MAX_CPU_PARTS = 4096;

/** Launches the per-channel reduction; returns the partial sums [C, parts] of vec2. */
function channelSums(
  op: string,
  l: Layout,
  kind: "stats" | "grad",
  inputs: Tensor[],
  relu = false,
): { partials: Tensor; parts: number } {
  const v = variant();
  const plan = reductionPlan(l, v);
  const partials = output(op, [l.channels, plan.parts, 2]);
  const source = channelSumsShader({
    kind,
    variant: v,
    vec4: l.vec4,
    relu,
    run: plan.run,
    aligned: plan.aligned,
  });
  const p = params()
    .u32(l.channels, l.unitsPerPlane, l.unitsPerChannel, plan.lanes, plan.parts)
    .f32(0, 0, 0, 0); // read only by the finishing form (channelSumsFinished)
  launch(op, source, [...inputs, partials, p], plan.grid);
  return { partials, parts: plan.parts };
}

/**
 * Channels from which llvmpipe reduces each channel in one workgroup that also finishes it (no
 * partial sums, no finalize dispatch): CPU threads take whole workgroups, so fewer channels
 * would leave cores idle. Paired A/B of training forward + backward (with ReLU) against
 * partials + finalize: [64, 16, 32, 32] 1.10x, [64, 32, 16, 16] 1.07x, [64, 64, 8, 8] 1.02x.
 */
const FINISH_IN_ONE_MIN_CHANNELS = 8;

/**
 * Whether a training batchnorm over `channels` channels takes its input's moments
 * (BatchNormOptions.moments) on this adapter: where it finishes the statistics in the pass that
 * normalises.
 */
export function batchNormTakesMoments(channels: number): boolean {
  return variant() === "cpu" && channels >= FINISH_IN_ONE_MIN_CHANNELS;
}

/** Whether the reduction finishes each channel in the same dispatch (`channelSumsFinished`). */
function finishesInOne(l: Layout): boolean {
  const v = variant();
  return v === "cpu" ? l.channels >= FINISH_IN_ONE_MIN_CHANNELS : reductionPlan(l, v).parts === 1;
}

/**
 * Whether a training pass on llvmpipe is one dispatch per direction: the workgroup that
 * reduces and finishes a channel then also normalises it (forward) or writes its dx
 * (backward), reading the channel again from its core's cache rather than in a second
 * dispatch. Paired A/B against two dispatches (training forward + backward with ReLU):
 * [64, 16, 32, 32] 1.01-1.05x, [64, 32, 16, 16] 1.04-1.06x, [64, 64, 8, 8] 1.01-1.04x; the
 * ResNet-8 training step 1.013x (median of 8 paired rounds; 18 dispatches fewer).
 */
function appliesInOne(l: Layout): boolean {
  return variant() === "cpu" && finishesInOne(l) && l.units > 0;
}

/**
 * The per-channel reduction with the finalize folded in: one workgroup per channel adds the
 * channel and writes `outputs` (stats, running mean, running var for "stats"; dgamma, dbeta
 * and in training coef for "grad"). `values` is (M, eps, momentum, M/(M-1)) as the finalize
 * kernels take them. With `apply` (cpu) the workgroup also writes the channel's y or dx (see
 * ChannelSumsSpec.apply for the bindings).
 */
function channelSumsFinished(
  op: string,
  l: Layout,
  kind: "stats" | "grad",
  inputs: Tensor[],
  outputs: Tensor[],
  values: number[],
  extra: Pick<ChannelSumsSpec, "relu" | "training" | "apply" | "residual" | "moments"> = {},
  /** Parts per channel of the moments input (with `extra.moments`). */
  parts = 1,
): void {
  const v = variant();
  const plan = reductionPlan(l, v);
  // cpu: the lane runs of reductionPlan, strided by the workgroup (no cap on their number).
  const run = v === "cpu" ? [32, 16, 8, 4].find((r) => l.unitsPerPlane % r === 0) ?? 16 : 0;
  // The cpu variant reads its per-unit operands (x, dy, res: see ChannelSumsSpec's bindings)
  // through textures when it can: all of them, or none.
  const unitOperands = [0, ...(kind === "grad" ? [1] : []), ...(extra.residual ? [inputs.length - 1] : [])];
  withUnitTextures(l, unitOperands.map((i) => inputs[i]), (operands, textures) => {
    const bound: KernelBinding[] = [...inputs];
    unitOperands.forEach((i, k) => bound[i] = operands[k]);
    const source = channelSumsShader({
      kind,
      variant: v,
      vec4: l.vec4,
      run,
      aligned: v === "cpu" && l.unitsPerPlane % run === 0,
      finalize: true,
      textures,
      ...extra,
    });
    const lanes = v === "cpu" ? REDUCE_WORKGROUP.cpu : plan.lanes;
    const p = params().u32(l.channels, l.unitsPerPlane, l.unitsPerChannel, lanes, parts).f32(...values);
    const grid = v === "cpu" ? grid1d(l.channels, 1) : [1, l.channels];
    launch(op, source, [...bound, ...outputs, p], grid);
  });
}

/**
 * withOperandTextures for the per-unit operands (x, dy, res) of a kernel, vec4 texels for vec4
 * units, and a streaming pass's per-channel constants `channel` (r32float: `load_channel` reads
 * them once per run of units, and a storage load there cost as much as the rest of the run on an
 * AMD Zen 3 VM), in the cpu variant. `record` gets the unit operands, then the channel ones.
 */
function withUnitTextures<T>(
  l: Layout,
  units: Tensor[],
  record: (operands: KernelBinding[], textures: boolean) => T,
  channel: Tensor[] = [],
): T {
  const vec4 = [...units.map(() => l.vec4), ...channel.map(() => false)];
  return withOperandTextures(variant() === "cpu", [...units, ...channel], vec4, record);
}

function check(op: string, x: Tensor, perChannel: [string, Tensor][], options: BatchNormOptions): void {
  checkFloat(op, x, ...perChannel.map(([, t]) => t));
  if (x.rank !== 4) {
    throw new ShapeError(op, `expects x of shape [N, C, H, W], got ${fmt(x.shape)}`);
  }
  const c = x.shape[1];
  for (const [name, t] of perChannel) {
    if (t.rank !== 1 || t.shape[0] !== c) {
      throw new ShapeError(
        op,
        `${name} must have shape [${c}] (one value per channel of x ${fmt(x.shape)}), got ${fmt(t.shape)}`,
      );
    }
  }
  const { momentum = 0.1, eps = 1e-5 } = options;
  if (!(momentum >= 0 && momentum <= 1)) throw new ShapeError(op, `momentum ${momentum} must be in [0, 1]`);
  if (!(eps > 0)) throw new ShapeError(op, `eps ${eps} must be > 0`);
  if (options.training && x.shape[0] * x.shape[2] * x.shape[3] <= 1) {
    // As PyTorch: one value per channel has no variance to normalise by (y would be beta).
    throw new ShapeError(
      op,
      `training needs more than one value per channel (N·H·W > 1), got x ${fmt(x.shape)}; ` +
        `use a larger batch or eval mode`,
    );
  }
}

/**
 * Batch normalisation of x [N, C, H, W] with scale gamma [C] and shift beta [C].
 * Training mode also updates runningMean and runningVar [C] in place (not recorded on the
 * tape: they are not inputs of the op). Differentiable with respect to x, gamma and beta.
 */
export function batchNorm2d(
  x: Tensor,
  gamma: Tensor,
  beta: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  options: BatchNormOptions,
): Tensor {
  const { y, stats } = batchNorm2dWithStats(x, gamma, beta, runningMean, runningVar, options);
  stats.dispose();
  return y;
}

/**
 * batchNorm2d that also returns the statistics it normalised with: stats [C, 2] holds
 * (mean, 1/sqrt(var + eps)) per channel — batch statistics (biased variance) in training,
 * running ones in eval. The caller owns `stats` (the gradient rule keeps its own reference).
 */
export function batchNorm2dWithStats(
  x: Tensor,
  gamma: Tensor,
  beta: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  options: BatchNormOptions,
): { y: Tensor; stats: Tensor } {
  const op = "batchNorm2d";
  check(op, x, [["gamma", gamma], ["beta", beta], ["runningMean", runningMean], [
    "runningVar",
    runningVar,
  ]], options);
  if (options.training && runningMean.buffer === runningVar.buffer) {
    throw new ShapeError(op, "runningMean and runningVar must be different tensors (both are updated)");
  }
  const { training, momentum = 0.1, eps = 1e-5, relu = false, residual, moments } = options;
  if (residual) {
    checkFloat(op, residual);
    if (!sameShape(residual.shape, x.shape)) {
      throw new ShapeError(op, `residual ${fmt(residual.shape)} must have the shape of x ${fmt(x.shape)}`);
    }
  }
  if (moments) {
    const want = [x.shape[1], moments.parts, 4];
    if (!sameShape(moments.partials.shape, want)) {
      throw new ShapeError(
        op,
        `moments.partials ${fmt(moments.partials.shape)} must be [C, parts, 4] = ${fmt(want)} for x ${
          fmt(x.shape)
        }`,
      );
    }
  }
  const l = layoutOf(x);
  const stats = output(op, [l.channels, 2]);
  const y = output(op, x.shape);
  if (l.channels === 0) return { y, stats };

  const perChannel = grid1d(l.channels, FINALIZE_WORKGROUP);
  const fused = training && appliesInOne(l);
  if (fused) {
    const unbias = l.count > 1 ? l.count / (l.count - 1) : 1;
    const values = [l.count, eps, momentum, unbias];
    const inputs = [x, ...(moments ? [moments.partials] : []), gamma, beta, ...(residual ? [residual] : [])];
    const outputs = [stats, runningMean, runningVar, y];
    const extra = {
      relu,
      training,
      apply: true,
      residual: residual !== undefined,
      moments: moments !== undefined,
    };
    channelSumsFinished(op, l, "stats", inputs, outputs, values, extra, moments?.parts);
  } else if (training) {
    const unbias = l.count > 1 ? l.count / (l.count - 1) : 1;
    if (finishesInOne(l)) {
      const values = [l.count, eps, momentum, unbias];
      channelSumsFinished(op, l, "stats", [x], [stats, runningMean, runningVar], values);
    } else {
      const { partials, parts } = channelSums(op, l, "stats", [x]);
      const p = params().u32(l.channels, parts, l.unitsPerPlane * (l.vec4 ? 4 : 1))
        .f32(l.count, eps, momentum, unbias);
      launch(op, batchStatsFinalizeShader, [x, partials, stats, runningMean, runningVar, p], perChannel);
      partials.dispose();
    }
  } else {
    launch(
      op,
      runningStatsShader,
      [runningMean, runningVar, stats, params().u32(l.channels).f32(eps)],
      perChannel,
    );
  }
  if (l.units > 0 && !fused) {
    const p = params().u32(l.units, l.unitsPerPlane, l.channels);
    const invocations = Math.ceil(l.units / l.stream.run);
    const units = residual ? [x, residual] : [x];
    withUnitTextures(l, units, (operands, textures) => {
      const [xIn, ...resIn] = operands.slice(0, units.length), channel = operands.slice(units.length);
      launch(
        op,
        normalizeShader(l.stream, relu, residual !== undefined, textures),
        [xIn, ...channel, ...resIn, y, p],
        grid1d(invocations, BN_WORKGROUP),
      );
    }, [stats, gamma, beta]);
  }

  const inputs = residual ? [x, gamma, beta, residual] : [x, gamma, beta];
  if (!needsGrad(...inputs)) return { y, stats };
  // Which gradients will be asked for is known now (the tape tracks inputs at record time).
  const wantDx = needsGrad(x), wantParams = needsGrad(gamma, beta);
  const wantResidual = residual !== undefined && needsGrad(residual);
  // The rule's own reference to the statistics (freed with the recording scope).
  const saved = stats.alias();
  record(op, inputs, y, (gradY) => {
    // With a residual the ReLU mask comes from the output (bn(x) + residual > 0): apply it
    // once; the masked gradient is the residual's and feeds the plain batchnorm backward.
    const masked = residual && relu
      ? mapElements(`${op}.backward`, "select(0.0, a, b > 0.0)", [gradY, y])
      : null;
    const dy = masked ?? gradY;
    const grads = batchNormGradients(dy);
    const dResidual = wantResidual ? dy.alias() : null;
    masked?.dispose();
    return residual ? [...grads, dResidual] : grads;
  });
  return { y, stats };

  /** dx, dgamma, dbeta from dy, the gradient of the output (of the ReLU when fused without a residual). */
  function batchNormGradients(dy: Tensor): (Tensor | null)[] {
    const relu = (options.relu ?? false) && !residual;
    let dgamma: Tensor | null = null, dbeta: Tensor | null = null, coef: Tensor | null = null;
    if (training && wantDx && appliesInOne(l)) {
      // One dispatch: Σdy and Σdy·x̂ per channel, then the channel's dx.
      dgamma = output(`${op}.backward`, [l.channels]);
      dbeta = output(`${op}.backward`, [l.channels]);
      const dx = output(`${op}.backward`, x.shape);
      const inputs = relu ? [x, dy, saved, gamma, beta] : [x, dy, saved, gamma];
      const values = [l.count, 0, 0, 0];
      const extra = { relu, training: true, apply: true };
      channelSumsFinished(`${op}.backward`, l, "grad", inputs, [dgamma, dbeta, dx], values, extra);
      return [dx, dgamma, dbeta];
    }
    // Σdy and Σdy·x̂: dgamma, dbeta, and in training the means that dx needs.
    if (training || wantParams) {
      const sumInputs = relu ? [x, dy, saved, gamma, beta] : [x, dy, saved];
      dgamma = output(`${op}.backward`, [l.channels]);
      dbeta = output(`${op}.backward`, [l.channels]);
      if (training) coef = output(`${op}.backward`, [l.channels, 2]);
      const outputs = coef ? [dgamma, dbeta, coef] : [dgamma, dbeta];
      if (finishesInOne(l)) {
        const values = [l.count, 0, 0, 0];
        channelSumsFinished(`${op}.backward`, l, "grad", sumInputs, outputs, values, { relu, training });
      } else {
        const { partials, parts } = channelSums(`${op}.backward`, l, "grad", sumInputs, relu);
        const p = params().u32(l.channels, parts).f32(l.count);
        const finalize = batchNormBackwardFinalizeShader(training);
        launch(`${op}.backward`, finalize, [partials, ...outputs, p], perChannel);
        partials.dispose();
      }
    }
    let dx: Tensor | null = null;
    if (wantDx) {
      const out = output(`${op}.backward`, x.shape);
      dx = out;
      if (l.units > 0) {
        const needsX = training || relu;
        const channel = [saved, gamma, ...(relu ? [beta] : []), ...(coef ? [coef] : [])];
        withUnitTextures(l, needsX ? [x, dy] : [dy], (operands, textures) => {
          const bindings = [...operands, out, params().u32(l.units, l.unitsPerPlane, l.channels)];
          launch(
            `${op}.backward`,
            batchNormBackwardDataShader(l.stream, training, relu, textures),
            bindings,
            grid1d(Math.ceil(l.units / l.stream.run), BN_WORKGROUP),
          );
        }, channel);
      }
    }
    coef?.dispose();
    return [dx, dgamma, dbeta];
  }
}
