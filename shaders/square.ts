/**
 * Kernels of the Square attack (Andriushchenko et al. 2020; src/attacks/square.ts drives them).
 *
 * Every random choice is a Philox draw keyed by the attack's seed with the counter
 * (sample, iteration, attempt·16 + purpose, stream), so a proposal is reproducible and no state
 * is kept. Per-sample decisions (is the sample still correctly classified? did the loss fall?)
 * are read from [N] buffers inside the kernels: nothing is read back.
 *
 * Layout: images [N, C, H, W]; `proposal` is u32 [N, 8] =
 *   (row, col, row2, col2, channel sign bits, transpose flag, 0, 0),
 * the window's top-left corner (L∞ and L2), the second window of L2, a sign per channel
 * (bit c set: +), and whether L2's pattern is transposed.
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";
import { philox } from "./random.ts";

/** Invocations per workgroup of the per-sample kernels (small, to spread samples over cores). */
export const SAMPLE_WORKGROUP = 16;

/** What a draw is for (the counter's third word, low 4 bits). */
export const PURPOSE = { init: 1, window: 2 } as const;

const params = /* wgsl */ `
struct Params {
  total: u32,                   // invocations
  channels: u32, height: u32, width: u32,
  side: u32,                    // window side s (L2 init: the bump side)
  iteration: u32, attempts: u32, stream: u32,
  seed_lo: u32, seed_hi: u32,
  eps: f32,
  pattern_side: u32,            // side of the pattern buffer (L2)
}`;

const draw = /* wgsl */ `
fn draw(sample: u32, iteration: u32, attempt: u32, purpose: u32) -> vec4<u32> {
  return philox4x32(vec4<u32>(sample, iteration, attempt * 16u + purpose, p.stream), vec2<u32>(p.seed_lo, p.seed_hi));
}

// Uniform integer in [0, count).
fn below(bits: u32, count: u32) -> u32 {
  return min(u32(unit_float(bits) * f32(count)), count - 1u);
}

fn sign_of(bits: u32, c: u32) -> f32 {
  return select(-1.0, 1.0, ((bits >> (c % 32u)) & 1u) == 1u);
}`;

const sampleIndex = /* wgsl */ `
fn sample_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * ${SAMPLE_WORKGROUP}u;
}`;

/**
 * L∞ initialisation: vertical stripes, x_best = clip(x + ε·σ) with one sign σ per
 * (sample, channel, column). Per element. Bindings: x, out, params.
 */
export const linfInitShader = /* wgsl */ `
${flatIndex}
${philox}
${params}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${draw}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  let column = i % p.width;
  let plane = i / (p.width * p.height);     // n·C + c
  let bits = draw(plane, column, 0u, ${PURPOSE.init}u);
  out[i] = clamp(x[i] + p.eps * sign_of(bits.x, 0u), 0.0, 1.0);
}`;

/**
 * L∞ proposal, one invocation per sample: a window of side s at a uniform position and a sign
 * per channel. Like the original, a proposal that would not change x_best (the window already
 * holds exactly those values) is redrawn, up to `attempts` times.
 * Bindings: x, x_best, loss_min, proposal, params.
 */
export const linfProposeShader = /* wgsl */ `
${sampleIndex}
${philox}
${params}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> x_best: array<f32>;
@group(0) @binding(2) var<storage, read> loss_min: array<f32>;
@group(0) @binding(3) var<storage, read_write> proposal: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;
${draw}

// Does writing clip(x + ε·σ_c) into the window change x_best anywhere?
fn changes(n: u32, row: u32, col: u32, signs: u32) -> bool {
  for (var c = 0u; c < p.channels; c++) {
    let v = p.eps * sign_of(signs, c);
    for (var r = row; r < row + p.side; r++) {
      for (var q = col; q < col + p.side; q++) {
        let i = ((n * p.channels + c) * p.height + r) * p.width + q;
        if (abs(clamp(x[i] + v, 0.0, 1.0) - x_best[i]) >= 1e-7) { return true; }
      }
    }
  }
  return false;
}

@compute @workgroup_size(${SAMPLE_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = sample_index(gid, nwg);
  if (n >= p.total) { return; }
  var bits = draw(n, p.iteration, 0u, ${PURPOSE.window}u);
  // Samples already misclassified (margin <= 0) are left alone: no window to check.
  if (loss_min[n] > 0.0) {
    for (var a = 1u; a < p.attempts; a++) {
      if (changes(n, below(bits.x, p.height - p.side + 1u), below(bits.y, p.width - p.side + 1u), bits.z)) {
        break;
      }
      bits = draw(n, p.iteration, a, ${PURPOSE.window}u);
    }
  }
  proposal[8u * n] = below(bits.x, p.height - p.side + 1u);
  proposal[8u * n + 1u] = below(bits.y, p.width - p.side + 1u);
  proposal[8u * n + 2u] = 0u;
  proposal[8u * n + 3u] = 0u;
  proposal[8u * n + 4u] = bits.z;
  proposal[8u * n + 5u] = 0u;
  proposal[8u * n + 6u] = 0u;
  proposal[8u * n + 7u] = 0u;
}`;

/**
 * L∞ candidate, per element: inside the sample's window clip(x + ε·σ_c), elsewhere x_best;
 * samples already misclassified keep x_best. Bindings: x, x_best, loss_min, proposal, out, params.
 */
export const linfApplyShader = /* wgsl */ `
${flatIndex}
${params}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> x_best: array<f32>;
@group(0) @binding(2) var<storage, read> loss_min: array<f32>;
@group(0) @binding(3) var<storage, read> proposal: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  let q = i % p.width;
  let r = (i / p.width) % p.height;
  let c = (i / (p.width * p.height)) % p.channels;
  let n = i / (p.width * p.height * p.channels);
  let row = proposal[8u * n];
  let col = proposal[8u * n + 1u];
  let inside = r >= row && r < row + p.side && q >= col && q < col + p.side;
  let sign = select(-1.0, 1.0, ((proposal[8u * n + 4u] >> (c % 32u)) & 1u) == 1u);
  out[i] = select(x_best[i], clamp(x[i] + p.eps * sign, 0.0, 1.0), inside && loss_min[n] > 0.0);
}`;

/**
 * L2 proposal, one invocation per sample: two windows of side s at uniform positions, a sign per
 * channel and whether the pattern is transposed. Bindings: proposal, params.
 */
export const l2ProposeShader = /* wgsl */ `
${sampleIndex}
${philox}
${params}
@group(0) @binding(0) var<storage, read_write> proposal: array<u32>;
@group(0) @binding(1) var<uniform> p: Params;
${draw}

@compute @workgroup_size(${SAMPLE_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = sample_index(gid, nwg);
  if (n >= p.total) { return; }
  let a = draw(n, p.iteration, 0u, ${PURPOSE.window}u);
  let b = draw(n, p.iteration, 1u, ${PURPOSE.window}u);
  proposal[8u * n] = below(a.x, p.height - p.side + 1u);
  proposal[8u * n + 1u] = below(a.y, p.width - p.side + 1u);
  proposal[8u * n + 2u] = below(b.x, p.height - p.side + 1u);
  proposal[8u * n + 3u] = below(b.y, p.width - p.side + 1u);
  proposal[8u * n + 4u] = a.z;
  proposal[8u * n + 5u] = a.w & 1u;
  proposal[8u * n + 6u] = 0u;
  proposal[8u * n + 7u] = 0u;
}`;

const pattern = /* wgsl */ `
// The (possibly transposed) s×s pattern at window coordinates (i, j).
fn pattern_at(i: u32, j: u32, transposed: bool) -> f32 {
  return select(pattern[i * p.pattern_side + j], pattern[j * p.pattern_side + i], transposed);
}`;

/**
 * L2 statistics, one invocation per (sample, channel), with δ = x_best − x:
 *   ‖δ_W1‖ over window 1, ‖δ_{W1∪W2}‖ over both windows, and the new window content
 *   u = σ_c·G + δ_W1/(1e-10 + ‖δ_W1‖), rescaled to norm sqrt(max(ε² − ‖δ‖², 0)/C + ‖δ_{W1∪W2}‖²):
 *   the budget the two windows held plus an equal share of what the image has left.
 * Writes stats[n, c] = (1/(1e-10 + ‖δ_W1‖), scale of u). Bindings: x, x_best, image_norm [N],
 * proposal, pattern, stats, params.
 */
export const l2StatsShader = /* wgsl */ `
${sampleIndex}
${params}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> x_best: array<f32>;
@group(0) @binding(2) var<storage, read> image_norm: array<f32>;
@group(0) @binding(3) var<storage, read> proposal: array<u32>;
@group(0) @binding(4) var<storage, read> pattern: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;
${pattern}

fn delta(plane: u32, r: u32, q: u32) -> f32 {
  let i = (plane * p.height + r) * p.width + q;
  return x_best[i] - x[i];
}

@compute @workgroup_size(${SAMPLE_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let plane = sample_index(gid, nwg);   // n·C + c
  if (plane >= p.total) { return; }
  let n = plane / p.channels;
  let c = plane % p.channels;
  let row = proposal[8u * n];
  let col = proposal[8u * n + 1u];
  let row2 = proposal[8u * n + 2u];
  let col2 = proposal[8u * n + 3u];
  let sign = select(-1.0, 1.0, ((proposal[8u * n + 4u] >> (c % 32u)) & 1u) == 1u);
  let transposed = proposal[8u * n + 5u] == 1u;
  var window1 = 0.0;
  for (var i = 0u; i < p.side; i++) {
    for (var j = 0u; j < p.side; j++) {
      let d = delta(plane, row + i, col + j);
      window1 += d * d;
    }
  }
  var outside1 = 0.0;  // the part of window 2 not in window 1
  for (var i = 0u; i < p.side; i++) {
    for (var j = 0u; j < p.side; j++) {
      let r = row2 + i;
      let q = col2 + j;
      let in1 = r >= row && r < row + p.side && q >= col && q < col + p.side;
      let d = select(delta(plane, r, q), 0.0, in1);
      outside1 += d * d;
    }
  }
  let inv = 1.0 / (1e-10 + sqrt(window1));
  var u2 = 0.0;
  for (var i = 0u; i < p.side; i++) {
    for (var j = 0u; j < p.side; j++) {
      let u = sign * pattern_at(i, j, transposed) + delta(plane, row + i, col + j) * inv;
      u2 += u * u;
    }
  }
  let left = max(p.eps * p.eps - image_norm[n] * image_norm[n], 0.0) / f32(p.channels);
  stats[2u * plane] = inv;
  stats[2u * plane + 1u] = sqrt(left + window1 + outside1) / max(sqrt(u2), 1e-12);
}`;

/**
 * L2 candidate perturbation δ', per element: window 1 gets the rescaled u, the rest of window 2
 * is zeroed, everything else keeps δ = x_best − x; misclassified samples keep δ.
 * Bindings: x, x_best, loss_min, proposal, pattern, stats, out, params.
 */
export const l2ApplyShader = /* wgsl */ `
${flatIndex}
${params}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> x_best: array<f32>;
@group(0) @binding(2) var<storage, read> loss_min: array<f32>;
@group(0) @binding(3) var<storage, read> proposal: array<u32>;
@group(0) @binding(4) var<storage, read> pattern: array<f32>;
@group(0) @binding(5) var<storage, read> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;
${pattern}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  let q = i % p.width;
  let r = (i / p.width) % p.height;
  let plane = i / (p.width * p.height);
  let c = plane % p.channels;
  let n = plane / p.channels;
  let d = x_best[i] - x[i];
  if (!(loss_min[n] > 0.0)) {
    out[i] = d;
    return;
  }
  let row = proposal[8u * n];
  let col = proposal[8u * n + 1u];
  let row2 = proposal[8u * n + 2u];
  let col2 = proposal[8u * n + 3u];
  if (r >= row && r < row + p.side && q >= col && q < col + p.side) {
    let sign = select(-1.0, 1.0, ((proposal[8u * n + 4u] >> (c % 32u)) & 1u) == 1u);
    let g = pattern_at(r - row, q - col, proposal[8u * n + 5u] == 1u);
    out[i] = (sign * g + d * stats[2u * plane]) * stats[2u * plane + 1u];
  } else if (r >= row2 && r < row2 + p.side && q >= col2 && q < col2 + p.side) {
    out[i] = 0.0;
  } else {
    out[i] = d;
  }
}`;

/**
 * L2 initialisation δ0, per element: a grid of s×s bumps (s = side, starting at the offsets
 * (H − 5s)/2, (W − 5s)/2), each the meta pseudo-Gaussian pattern (transposed at random) times
 * a random sign per (sample, channel, bump); 0 outside the bumps. Bindings: pattern, out, params.
 */
export const l2InitShader = /* wgsl */ `
${flatIndex}
${philox}
${params}
@group(0) @binding(0) var<storage, read> pattern: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${draw}
${pattern}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  let q = i32(i % p.width);
  let r = i32((i / p.width) % p.height);
  let plane = i / (p.width * p.height);
  let s = i32(p.side);
  let top = (i32(p.height) - 5 * s) / 2;
  let left = (i32(p.width) - 5 * s) / 2;
  let bi = (r - top) / s;
  let bj = (q - left) / s;
  let inside = r >= top && q >= left && bi < i32(p.height) / s && bj < i32(p.width) / s &&
    top + (bi + 1) * s <= i32(p.height) && left + (bj + 1) * s <= i32(p.width);
  if (!inside) {
    out[i] = 0.0;
    return;
  }
  let bump = u32(bi) * 4096u + u32(bj);
  let sign_bits = draw(plane, bump, 0u, ${PURPOSE.init}u);
  // The transpose is drawn per (sample, bump), shared by the channels.
  let transpose_bits = draw(plane / p.channels, bump, 1u, ${PURPOSE.init}u);
  let g = pattern_at(u32(r - top - bi * s), u32(q - left - bj * s), (transpose_bits.x & 1u) == 1u);
  out[i] = sign_of(sign_bits.x, 0u) * g;
}`;

/**
 * x_new = clip(x + δ·ε/‖δ‖) (a perturbation rescaled to norm exactly ε, as the L2 attack does),
 * per element. Bindings: x, delta, norm [N], out, params.
 */
export const l2RescaleShader = /* wgsl */ `
${flatIndex}
${params}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> delta: array<f32>;
@group(0) @binding(2) var<storage, read> norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  let n = i / (p.channels * p.height * p.width);
  out[i] = clamp(x[i] + delta[i] * (p.eps / max(norm[n], 1e-12)), 0.0, 1.0);
}`;

/**
 * Acceptance of the candidates, images: x_best ← x_new where the sample is still correctly
 * classified (loss_min > 0) and the candidate's loss is lower. Per element, in place; runs
 * before `acceptLossShader` updates loss_min. Bindings: x_new, loss, loss_min, x_best, params.
 */
export const acceptImagesShader = /* wgsl */ `
${flatIndex}
${params}
@group(0) @binding(0) var<storage, read> x_new: array<f32>;
@group(0) @binding(1) var<storage, read> loss: array<f32>;
@group(0) @binding(2) var<storage, read> loss_min: array<f32>;
@group(0) @binding(3) var<storage, read_write> x_best: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  let n = i / (p.channels * p.height * p.width);
  if (loss_min[n] > 0.0 && loss[n] < loss_min[n]) { x_best[i] = x_new[i]; }
}`;

/** Acceptance, losses: loss_min ← loss where accepted (same rule). Per sample, in place. Bindings: loss, loss_min, params. */
export const acceptLossShader = /* wgsl */ `
${flatIndex}
${params}
@group(0) @binding(0) var<storage, read> loss: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss_min: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = flat_index(gid, nwg);
  if (n >= p.total) { return; }
  if (loss_min[n] > 0.0 && loss[n] < loss_min[n]) { loss_min[n] = loss[n]; }
}`;
