/**
 * AToP's random transforms t(x) (docs ATOP.md section 2), on the GPU, with a fresh draw per
 * sample on every call.
 *
 * Images x live in [0, 1] ([N, C, H, W]); the generator works in [-1, 1]. Its input is
 *   concat((2v - 1)(1 - m), ones, m)  over channels: [N, C + 2, H, W],
 * with m the block mask (1 = missing; missing pixels become 0, i.e. grey) and
 *   RT1: v = x                       (mask only)
 *   RT2: v = clip01(x + sigma z)     (Gaussian noise, z ~ N(0, 1), then the mask)
 *   RT3: v as RT2, covered by `copies` (4) complementary masks: every block is missing in exactly
 *        one copy; the copies are stacked copy-major along the batch ([copies * N, C + 2, H, W],
 *        row k * N + n = copy k of sample n), each is purified, and combineRt3 takes every pixel
 *        from the copy in which it was missing: x_hat = sum_k m_k g(t_k(x)).
 *
 * A draw (mask and noise) is a value of its own (`drawRt`), so a clean and an adversarial branch
 * can share one (the released AToP code does), and `applyRt` is differentiable w.r.t. x (the
 * adaptive attack differentiates through it; the mask and noise are constants). Every draw is
 * named by a Philox (seed, stream) pair: fresh from `defaultGenerator` per call, or fixed
 * (`fixedRandomness`) to freeze the defence's randomness.
 *
 * Block geometry: blocks are ceil(H / grid) x ceil(W / grid) pixels from the top-left corner, so
 * the last row / column of blocks is smaller when grid does not divide H / W (28 x 28 with grid 4:
 * all 7 x 7; 10 x 10 with grid 4: 3, 3, 3 and 1 rows). Grids that would leave a block empty are
 * refused.
 */
import {
  blockMaskShader,
  blockRanksShader,
  combineMaskedBackwardShader,
  combineMaskedShader,
  rtInputBackwardShader,
  rtInputShader,
} from "../../shaders/purify.ts";
import { record } from "../autograd/tape.ts";
import { checkFloat } from "../ops/elementwise.ts";
import { checkLoopLength, grid1d, launch, output, params } from "../ops/kernel.ts";
import { defaultGenerator, randn, type RandomOptions } from "../ops/random.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** Largest grid: one invocation shuffles grid^2 blocks, within llvmpipe's loop limit for 64^2. */
export const MAX_GRID = 64;

export interface BlockMaskOptions extends RandomOptions {
  /** Blocks per side (default 4). */
  grid?: number;
  /** Fraction of the grid^2 blocks missing per sample; exactly round(missing * grid^2) (default 0.25). */
  missing?: number;
}

/** Block size of a grid x grid split of an h x w image (last row / column may be smaller). */
export function blockGeometry(
  op: string,
  h: number,
  w: number,
  grid: number,
): { blockH: number; blockW: number } {
  if (!Number.isInteger(grid) || grid < 1 || grid > MAX_GRID) {
    throw new ShapeError(op, `grid must be an integer in [1, ${MAX_GRID}], got ${grid}`);
  }
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) {
    throw new ShapeError(op, `image size must be positive integers, got ${h} x ${w}`);
  }
  const blockH = Math.ceil(h / grid), blockW = Math.ceil(w / grid);
  // The last block row starts at (grid - 1) * blockH; it must start inside the image.
  if ((grid - 1) * blockH >= h || (grid - 1) * blockW >= w) {
    throw new ShapeError(
      op,
      `a ${grid} x ${grid} grid of ${blockH} x ${blockW} blocks leaves empty blocks in a ${h} x ${w} image; ` +
        `use a smaller grid`,
    );
  }
  return { blockH, blockW };
}

/** The (seed, stream) of a draw: the given pair, or a fresh one from the default generator. */
function resolveRandomness(options: RandomOptions): { seed: number; stream: number } {
  return options.seed === undefined
    ? defaultGenerator.next()
    : { seed: options.seed, stream: options.stream ?? 0 };
}

function checkSamples(op: string, n: number): void {
  if (!Number.isInteger(n) || n < 0) {
    throw new ShapeError(op, `sample count must be an integer >= 0, got ${n}`);
  }
}

/**
 * Block masks of `copies` images per sample, [copies * N, 1, H, W] copy-major. With copies = 1,
 * `missing` blocks (by count) are missing; with copies > 1 the copies' missing blocks partition
 * the grid (near-equal groups of one permutation).
 */
function drawBlockMasks(
  op: string,
  n: number,
  h: number,
  w: number,
  grid: number,
  copies: number,
  missing: number,
  randomness: { seed: number; stream: number },
): Tensor {
  const { blockH, blockW } = blockGeometry(op, h, w, grid);
  const blocks = grid * grid;
  const masks = output(op, [copies * n, 1, h, w]);
  if (masks.size === 0) return masks;
  const { seed, stream } = randomness;
  // Per sample: a random permutation of the blocks (perm: the kernel's scratch), as ranks.
  const perm = output(`${op}.perm`, [n, blocks], "u32");
  const ranks = output(`${op}.ranks`, [n, blocks], "u32");
  const seedWords = [seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0];
  const rankParams = params().u32(n, blocks, stream >>> 0, ...seedWords);
  launch(`${op}.ranks`, blockRanksShader, [perm, ranks, rankParams], grid1d(n));
  perm.dispose();
  // Per pixel: missing when its block's rank falls in the copy's range.
  const pixels = n * h * w;
  const p = params().u32(pixels, n, h, w, blockH, blockW, grid, blocks, copies, missing);
  launch(op, blockMaskShader, [ranks, masks, p], grid1d(pixels));
  ranks.dispose();
  return masks;
}

/**
 * Random block masks [N, 1, H, W], 1 = missing: exactly round(missing * grid^2) of the grid^2
 * blocks are missing in each sample, chosen uniformly and independently per sample. Without
 * seed/stream every call draws a fresh (seed, stream) from `defaultGenerator`.
 */
export function blockMask(n: number, h: number, w: number, options: BlockMaskOptions = {}): Tensor {
  const op = "blockMask";
  const { grid = 4, missing = 0.25 } = options;
  checkSamples(op, n);
  if (!(missing >= 0 && missing <= 1)) {
    throw new ShapeError(op, `missing is a fraction of blocks in [0, 1], got ${missing}`);
  }
  const count = Math.round(missing * grid * grid);
  return drawBlockMasks(op, n, h, w, grid, 1, count, resolveRandomness(options));
}

/**
 * `copies` complementary block masks per sample, [copies * N, 1, H, W] copy-major (row k * N + n):
 * one random permutation of the grid^2 blocks split into `copies` near-equal consecutive groups,
 * so every block (and pixel) is missing in exactly one copy.
 */
export function complementaryMasks(
  n: number,
  h: number,
  w: number,
  options: RandomOptions & { grid?: number; copies?: number } = {},
): Tensor {
  const op = "complementaryMasks";
  const { grid = 4, copies = 4 } = options;
  checkSamples(op, n);
  checkCopies(op, copies, grid * grid);
  return drawBlockMasks(op, n, h, w, grid, copies, 0, resolveRandomness(options));
}

function checkCopies(op: string, copies: number, blocks: number): void {
  if (!Number.isInteger(copies) || copies < 2 || copies > blocks) {
    throw new ShapeError(op, `copies must be an integer in [2, grid^2 = ${blocks}], got ${copies}`);
  }
}

function checkImages(op: string, x: Tensor): void {
  checkFloat(op, x);
  if (x.rank !== 4) throw new ShapeError(op, `expects images [N, C, H, W], got ${x.describe()}`);
}

// ---- the differentiable transform: x -> generator input ----

/**
 * Generator input of every copy: out[k*N + n] = concat((2v - 1)(1 - m_k), 1, m_k) with
 * v = x, or clip01(x + sigma * noise) when noise is given. x [N, C, H, W], masks
 * [copies * N, 1, H, W], noise [N, C, H, W] or null. Differentiable w.r.t. x only:
 *   dL/dx = sum_k dL/dout_k[:, :C] * 2 (1 - m_k) * [0 <= x + sigma z <= 1].
 */
export function maskedInput(x: Tensor, masks: Tensor, noise: Tensor | null, sigma = 0): Tensor {
  const op = "maskedInput";
  checkImages(op, x);
  checkFloat(op, masks);
  const [n, c, h, w] = x.shape;
  const copies = n === 0 ? 1 : masks.shape[0] / n;
  if (
    masks.rank !== 4 || masks.shape[1] !== 1 || masks.shape[2] !== h || masks.shape[3] !== w ||
    !Number.isInteger(copies) || copies < 1
  ) {
    throw new ShapeError(
      op,
      `masks ${fmt(masks.shape)} must be [copies * N, 1, H, W] for images ${fmt(x.shape)}`,
    );
  }
  if (noise) {
    checkFloat(op, noise);
    if (noise.shape.length !== 4 || noise.shape.some((d, i) => d !== x.shape[i])) {
      throw new ShapeError(op, `noise ${fmt(noise.shape)} must have the images' shape ${fmt(x.shape)}`);
    }
  }
  if (!Number.isFinite(sigma) || sigma < 0) throw new ShapeError(op, `sigma must be >= 0, got ${sigma}`);
  // One invocation per pixel loops over the channels (and copies, backward).
  checkLoopLength(op, c * copies, "channels x copies");
  const out = output(op, [copies * n, c + 2, h, w]);
  if (out.size === 0) return out;
  const plane = h * w;
  const noiseBinding = noise ? [noise] : [];
  launch(
    op,
    rtInputShader(noise !== null),
    [x, ...noiseBinding, masks, out, params().u32(copies * n * plane, n, c, plane).f32(sigma)],
    grid1d(copies * n * plane),
  );
  return record(op, [x], out, (dy) => {
    const dx = output(`${op}.backward`, x.shape);
    if (dx.size === 0) return [dx];
    const p = params().u32(n * plane, n, c, plane, copies).f32(sigma);
    const inputs = noise ? [dy, x, noise] : [dy];
    launch(
      `${op}.backward`,
      rtInputBackwardShader(noise !== null),
      [...inputs, masks, dx, p],
      grid1d(n * plane),
    );
    return [dx];
  }, noise ? [x, noise, masks] : [masks]);
}

/**
 * x_hat[n] = sum_k masks[k*N + n] * purified[k*N + n]: each pixel from the copy in which it was
 * missing (RT3). purified [copies * N, C, H, W], masks [copies * N, 1, H, W]. Differentiable
 * w.r.t. purified (dL/dpurified_k = m_k * dL/dx_hat); the masks are constants.
 */
export function combineRt3(purified: Tensor, masks: Tensor, copies = 4): Tensor {
  const op = "combineRt3";
  checkImages(op, purified);
  checkFloat(op, masks);
  const [rows, c, h, w] = purified.shape;
  if (!Number.isInteger(copies) || copies < 1 || rows % copies !== 0) {
    throw new ShapeError(
      op,
      `batch ${rows} of ${fmt(purified.shape)} is not a multiple of copies = ${copies}`,
    );
  }
  if (
    masks.rank !== 4 || masks.shape[0] !== rows || masks.shape[1] !== 1 || masks.shape[2] !== h ||
    masks.shape[3] !== w
  ) {
    throw new ShapeError(
      op,
      `masks ${fmt(masks.shape)} must be [${rows}, 1, ${h}, ${w}] for ${fmt(purified.shape)}`,
    );
  }
  const n = rows / copies, plane = h * w;
  // One invocation per pixel loops over the channels and copies.
  checkLoopLength(op, c * copies, "channels x copies");
  const out = output(op, [n, c, h, w]);
  if (out.size === 0) return out;
  launch(
    op,
    combineMaskedShader,
    [purified, masks, out, params().u32(n * plane, n, c, plane, copies)],
    grid1d(n * plane),
  );
  return record(op, [purified], out, (dy) => {
    const dg = output(`${op}.backward`, purified.shape);
    launch(
      `${op}.backward`,
      combineMaskedBackwardShader,
      [dy, masks, dg, params().u32(rows * plane, n, c, plane)],
      grid1d(rows * plane),
    );
    return [dg];
  }, [masks]);
}

// ---- configurations, draws, and the transform object ----

export type RtKind = "rt1" | "rt2" | "rt3";

export interface RtConfig {
  kind: RtKind;
  /** Blocks per side (default 4). */
  grid?: number;
  /** Fraction of blocks missing, RT1/RT2 (default 0.25). RT3 misses 1/copies per copy. */
  missing?: number;
  /** Noise standard deviation, RT2/RT3 (default 0.25). */
  sigma?: number;
  /** Complementary copies, RT3 (default 4). */
  copies?: number;
  /** Freeze the randomness: this (seed, stream) on every call (determinism checks). */
  fixedRandomness?: { seed: number; stream?: number };
}

/** A transform's settings with the defaults filled in (see RtConfig). */
function rtSettings(cfg: RtConfig) {
  const { kind, grid = 4, missing = 0.25, sigma = 0.25, copies = 4 } = cfg;
  return { kind, grid, missing, sigma, copies };
}

/** The settings a transform uses, in words (those it ignores left out): for reports. */
export function describeRt(cfg: RtConfig): string {
  const { kind, grid, missing, sigma, copies } = rtSettings(cfg);
  const blocks = `${grid}×${grid} grid`;
  if (kind === "rt1") return `rt1 (${blocks}, ${100 * missing} % missing, no noise)`;
  if (kind === "rt2") return `rt2 (σ ${sigma}, ${blocks}, ${100 * missing} % missing)`;
  return `rt3 (σ ${sigma}, ${blocks}, ${copies} complementary masks, 1/${copies} missing each)`;
}

/**
 * Checks that a transform's grid fits h x w images (see blockGeometry), so a run can refuse a
 * bad grid before it trains anything; `op` names the setting in the error.
 */
export function checkRtFits(op: string, cfg: RtConfig, h: number, w: number): void {
  blockGeometry(op, h, w, rtSettings(cfg).grid);
}

/** One draw of a transform's randomness, reusable by several branches. The caller disposes it. */
export interface RtDraw {
  kind: RtKind;
  /** Images per sample: 1 (RT1/RT2) or `copies` (RT3). */
  copies: number;
  /** [copies * N, 1, H, W], 1 = missing. */
  mask: Tensor;
  /** z ~ N(0, 1) of the images' shape (RT2/RT3), or null (RT1). */
  noise: Tensor | null;
  sigma: number;
  /** The Philox pair it was drawn from: the mask uses counter word w = 1, the noise randn's w = 0. */
  seed: number;
  stream: number;
}

/**
 * Draws a transform's randomness for images of `shape` [N, C, H, W]: one (seed, stream) pair
 * (fresh per call unless cfg.fixedRandomness) gives the masks and the noise.
 */
export function drawRt(shape: readonly number[], cfg: RtConfig): RtDraw {
  const op = "drawRt";
  if (shape.length !== 4) throw new ShapeError(op, `expects an image shape [N, C, H, W], got ${fmt(shape)}`);
  const [n, c, h, w] = shape;
  checkSamples(op, n);
  const { kind, grid, missing, sigma, copies } = rtSettings(cfg);
  if (kind !== "rt1" && kind !== "rt2" && kind !== "rt3") {
    throw new ShapeError(op, `unknown transform kind "${kind}" (rt1, rt2 or rt3)`);
  }
  if (!Number.isFinite(sigma) || sigma < 0) throw new ShapeError(op, `sigma must be >= 0, got ${sigma}`);
  const randomness = resolveRandomness(cfg.fixedRandomness ?? {});
  const mask = kind === "rt3"
    ? complementaryMasks(n, h, w, { grid, copies, ...randomness })
    : blockMask(n, h, w, { grid, missing, ...randomness });
  const noise = kind === "rt1" ? null : randn([n, c, h, w], randomness);
  return {
    kind,
    copies: kind === "rt3" ? copies : 1,
    mask,
    noise,
    sigma: kind === "rt1" ? 0 : sigma,
    ...randomness,
  };
}

/** The generator input t(x) for a draw: [copies * N, C + 2, H, W], differentiable w.r.t. x. */
export function applyRt(x: Tensor, draw: RtDraw): Tensor {
  const op = "applyRt";
  checkImages(op, x);
  const rows = x.shape[0] * draw.copies;
  if (draw.mask.shape[0] !== rows || draw.mask.shape[2] !== x.shape[2] || draw.mask.shape[3] !== x.shape[3]) {
    throw new ShapeError(op, `draw for masks ${fmt(draw.mask.shape)} does not fit images ${fmt(x.shape)}`);
  }
  return maskedInput(x, draw.mask, draw.noise, draw.sigma);
}

export function disposeRtDraw(draw: RtDraw): void {
  draw.mask.dispose();
  draw.noise?.dispose();
}

type RtOptions = Omit<RtConfig, "kind">;

/** RT1 (mask only) with a fresh draw: generator input [N, C + 2, H, W] and its mask [N, 1, H, W]. */
export function rt1(x: Tensor, options: RtOptions = {}): { input: Tensor; mask: Tensor } {
  checkImages("rt1", x);
  const draw = drawRt(x.shape, { ...options, kind: "rt1" });
  return { input: applyRt(x, draw), mask: draw.mask };
}

/** RT2 (noise, clip, then mask) with a fresh draw; returns the noise z too. */
export function rt2(x: Tensor, options: RtOptions = {}): { input: Tensor; mask: Tensor; noise: Tensor } {
  checkImages("rt2", x);
  const draw = drawRt(x.shape, { ...options, kind: "rt2" });
  return { input: applyRt(x, draw), mask: draw.mask, noise: draw.noise! };
}

/**
 * RT3 with a fresh draw: the noisy image under `copies` complementary masks, stacked copy-major
 * ([copies * N, C + 2, H, W]); purify it and recombine with combineRt3(purified, masks, copies).
 */
export function rt3(x: Tensor, options: RtOptions = {}): { input: Tensor; masks: Tensor; noise: Tensor } {
  checkImages("rt3", x);
  const draw = drawRt(x.shape, { ...options, kind: "rt3" });
  return { input: applyRt(x, draw), masks: draw.mask, noise: draw.noise! };
}

/**
 * A configured random transform for the purifier pipeline:
 *   const d = t.draw(x.shape); const xHat = t.combine(g(t.apply(x, d)), d);
 * `combine` is the identity for RT1/RT2 (the classifier sees the whole generator output) and
 * combineRt3 for RT3. Pass the same draw to several branches to share it.
 */
export class RandomTransform {
  readonly config: Required<Omit<RtConfig, "fixedRandomness">> & Pick<RtConfig, "fixedRandomness">;

  constructor(config: RtConfig) {
    this.config = { grid: 4, missing: 0.25, sigma: 0.25, copies: 4, ...config };
  }

  /** Images the generator sees per input image (1, or `copies` for RT3). */
  get copies(): number {
    return this.config.kind === "rt3" ? this.config.copies : 1;
  }

  draw(shape: readonly number[]): RtDraw {
    return drawRt(shape, this.config);
  }

  apply(x: Tensor, draw: RtDraw): Tensor {
    return applyRt(x, draw);
  }

  /** Generator outputs [copies * N, C, H, W] -> purified images [N, C, H, W]. */
  combine(purified: Tensor, draw: RtDraw): Tensor {
    return draw.kind === "rt3" ? combineRt3(purified, draw.mask, draw.copies) : purified;
  }
}
