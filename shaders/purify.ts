/**
 * Kernels of AToP's random transforms (src/purify/transforms.ts).
 *
 * Block masks: the H x W image is cut into a grid x grid array of blocks; each sample gets its
 * own uniformly random permutation of the B = grid^2 blocks (Fisher-Yates driven by Philox), and
 * a block is missing in copy k when its position ("rank") in the permutation falls in that copy's
 * range of positions. Two kernels: one invocation per sample draws the permutation
 * (`blockRanksShader`), then one invocation per pixel expands ranks to masks
 * (`blockMaskShader`).
 *
 * Transform inputs: the generator input concat((2v - 1)(1 - m), 1, m) over channels, with
 * v = x (RT1) or v = clip01(x + sigma z) (RT2/RT3), built in one pass (`rtInputShader`), and its
 * gradient w.r.t. x (`rtInputBackwardShader`). RT3's recombination sum_k m_k g_k
 * (`combineMaskedShader`) and its gradient (`combineMaskedBackwardShader`).
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";
import { philox } from "./random.ts";

/** Declares bindings 0, 1, ... in the given order, skipping the nulls (bindings not used). */
function numberedBindings(declarations: (string | null)[]): string {
  return declarations.filter((d) => d !== null)
    .map((d, i) => `@group(0) @binding(${i}) ${d};`)
    .join("\n");
}

/**
 * Per-sample random permutation of B = `p.blocks` blocks; writes ranks[n, b] = position of
 * block b. `perm` [N, B] is scratch space for the shuffle (a private array would have to be
 * sized in the source, and llvmpipe takes seconds to compile one of 1024 entries).
 *
 * Fisher-Yates: for i = 0 .. B-2, swap perm[i] with perm[j], j = i + floor(u * (B - i)) where
 * floor(u * m) is computed as mul_hi(bits, m) = floor(bits * m / 2^32) for 32 random bits
 * (bias at most m / 2^32, far below anything measurable). Step i uses word i % 4 of
 * philox(counter = (n, i / 4, stream, 1), key = seed); the last counter word 1 keeps these draws
 * apart from rand/randn of the same (seed, stream), which use 0. Sample n's permutation depends
 * only on (seed, stream, n), not on the batch size. Loops: 3B + 10 B/4 iterations per
 * invocation, under llvmpipe's limit for B <= 4096 (grid <= 64).
 */
export const blockRanksShader = /* wgsl */ `
${flatIndex}
${philox}
struct Params { samples: u32, blocks: u32, stream: u32, seed_lo: u32, seed_hi: u32 }
@group(0) @binding(0) var<storage, read_write> perm: array<u32>;
@group(0) @binding(1) var<storage, read_write> ranks: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = flat_index(gid, nwg);
  if (n >= p.samples) { return; }
  let key = vec2<u32>(p.seed_lo, p.seed_hi);
  let base = n * p.blocks;
  for (var i = 0u; i < p.blocks; i++) { perm[base + i] = i; }
  var bits = vec4<u32>(0u);
  for (var i = 0u; i + 1u < p.blocks; i++) {
    if ((i & 3u) == 0u) { bits = philox4x32(vec4<u32>(n, i >> 2u, p.stream, 1u), key); }
    let j = i + mul_hi(bits[i & 3u], p.blocks - i);
    let t = perm[base + i];
    perm[base + i] = perm[base + j];
    perm[base + j] = t;
  }
  for (var i = 0u; i < p.blocks; i++) { ranks[base + perm[base + i]] = i; }
}`;

/**
 * masks[k*N + n, 0, y, x] (copy-major, [copies * N, 1, H, W]) = 1 when the rank of the block
 * holding pixel (y, x) lies in copy k's range: [0, missing) for a single mask, else the k-th of
 * `copies` near-equal consecutive ranges [k B / copies, (k + 1) B / copies), so the copies'
 * missing blocks partition the image. One invocation per pixel of a sample, looping over copies.
 */
export const blockMaskShader = /* wgsl */ `
${flatIndex}
struct Params {
  total: u32, samples: u32, height: u32, width: u32,
  block_h: u32, block_w: u32, grid: u32, blocks: u32,
  copies: u32, missing: u32,
}
@group(0) @binding(0) var<storage, read> ranks: array<u32>;
@group(0) @binding(1) var<storage, read_write> masks: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);           // n * plane + s
  if (i >= p.total) { return; }
  let plane = p.width * p.height;
  let s = i % plane;
  let n = i / plane;
  let x = s % p.width;
  let y = s / p.width;
  let rank = ranks[n * p.blocks + (y / p.block_h) * p.grid + x / p.block_w];
  if (p.copies == 1u) {
    masks[i] = select(0.0, 1.0, rank < p.missing);
    return;
  }
  for (var k = 0u; k < p.copies; k++) {
    let lo = k * p.blocks / p.copies;
    let hi = (k + 1u) * p.blocks / p.copies;
    masks[(k * p.samples + n) * plane + s] = select(0.0, 1.0, rank >= lo && rank < hi);
  }
}`;

/**
 * out[k*N + n, ch, s] for x [N, C, H, W], masks [copies*N, 1, H, W] (noise [N, C, H, W]),
 * s = y * W + x the pixel:
 *   ch < C:  (2 v - 1) (1 - m),  v = x or clamp(x + sigma z, 0, 1)   (masked pixels -> 0, grey)
 *   ch = C:  1
 *   ch = C+1: m
 * Every copy k sees the same x (and noise); only the mask differs. One invocation per pixel of
 * a copy (reads its mask once), looping over channels: neighbouring invocations still touch
 * neighbouring addresses.
 */
export function rtInputShader(noise: boolean): string {
  const value = noise ? "clamp(x[src] + p.sigma * noise[src], 0.0, 1.0)" : "x[src]";
  return /* wgsl */ `
${flatIndex}
struct Params { total: u32, samples: u32, channels: u32, plane: u32, sigma: f32 }
${
    numberedBindings([
      "var<storage, read> x: array<f32>",
      noise ? "var<storage, read> noise: array<f32>" : null,
      "var<storage, read> masks: array<f32>",
      "var<storage, read_write> out: array<f32>",
      "var<uniform> p: Params",
    ])
  }

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);           // (k * N + n) * plane + s
  if (i >= p.total) { return; }
  let s = i % p.plane;
  let image = i / p.plane;                // k * N + n
  let m = masks[i];
  let src0 = (image % p.samples) * p.channels * p.plane + s;
  let dst0 = image * (p.channels + 2u) * p.plane + s;
  for (var ch = 0u; ch < p.channels; ch++) {
    let src = src0 + ch * p.plane;
    let v = ${value};
    out[dst0 + ch * p.plane] = (2.0 * v - 1.0) * (1.0 - m);
  }
  out[dst0 + p.channels * p.plane] = 1.0;
  out[dst0 + (p.channels + 1u) * p.plane] = m;
}`;
}

/**
 * dx[n, c, s] = sum_k dy[k*N + n, c, s] * 2 (1 - m_k[n, s]) * inside, where inside = 1 without
 * noise and [0 <= x + sigma z <= 1] with it (the clamp passes the gradient on its closed
 * interval, as the clamp op). One invocation per pixel of a sample, looping over copies and
 * channels: each dx element is one invocation's sum, no atomics.
 */
export function rtInputBackwardShader(noise: boolean): string {
  const inside = noise
    ? `let v = x[src] + p.sigma * noise[src];
    let inside = select(0.0, 1.0, v >= 0.0 && v <= 1.0);`
    : "let inside = 1.0;";
  return /* wgsl */ `
${flatIndex}
struct Params { total: u32, samples: u32, channels: u32, plane: u32, copies: u32, sigma: f32 }
${
    numberedBindings([
      "var<storage, read> dy: array<f32>",
      noise ? "var<storage, read> x: array<f32>" : null,
      noise ? "var<storage, read> noise: array<f32>" : null,
      "var<storage, read> masks: array<f32>",
      "var<storage, read_write> dx: array<f32>",
      "var<uniform> p: Params",
    ])
  }

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);           // n * plane + s
  if (i >= p.total) { return; }
  let s = i % p.plane;
  let n = i / p.plane;
  for (var c = 0u; c < p.channels; c++) {
    let src = (n * p.channels + c) * p.plane + s;
    var acc = 0.0;
    for (var k = 0u; k < p.copies; k++) {
      let image = k * p.samples + n;
      let keep = 1.0 - masks[image * p.plane + s];
      acc += dy[(image * (p.channels + 2u) + c) * p.plane + s] * 2.0 * keep;
    }
    ${inside}
    dx[src] = acc * inside;
  }
}`;
}

/**
 * out[n, c, s] = sum_k m[k*N + n, s] * g[k*N + n, c, s] (RT3: each pixel from the copy in which
 * it was missing). One invocation per pixel of a sample, looping over channels and copies.
 */
export const combineMaskedShader = /* wgsl */ `
${flatIndex}
struct Params { total: u32, samples: u32, channels: u32, plane: u32, copies: u32 }
@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read> masks: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);           // n * plane + s
  if (i >= p.total) { return; }
  let s = i % p.plane;
  let n = i / p.plane;
  for (var c = 0u; c < p.channels; c++) {
    var acc = 0.0;
    for (var k = 0u; k < p.copies; k++) {
      let image = k * p.samples + n;
      acc += masks[image * p.plane + s] * g[(image * p.channels + c) * p.plane + s];
    }
    out[(n * p.channels + c) * p.plane + s] = acc;
  }
}`;

/** dg[k*N + n, c, s] = m[k*N + n, s] * dy[n, c, s]; one invocation per pixel of a copy. */
export const combineMaskedBackwardShader = /* wgsl */ `
${flatIndex}
struct Params { total: u32, samples: u32, channels: u32, plane: u32 }
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> masks: array<f32>;
@group(0) @binding(2) var<storage, read_write> dg: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);           // (k * N + n) * plane + s
  if (i >= p.total) { return; }
  let s = i % p.plane;
  let image = i / p.plane;
  let m = masks[i];
  let src0 = (image % p.samples) * p.channels * p.plane + s;
  let dst0 = image * p.channels * p.plane + s;
  for (var c = 0u; c < p.channels; c++) {
    dg[dst0 + c * p.plane] = m * dy[src0 + c * p.plane];
  }
}`;
