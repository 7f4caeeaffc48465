/**
 * Kernels of the gradient attacks (src/attacks/projection.ts dispatches them): the steps and
 * projections onto the threat model's ball intersected with the image box [0,1]^D, random
 * starts, and the per-sample bookkeeping (masked copies, keep-best) that lets an attack decide
 * per sample on the GPU instead of reading anything back.
 *
 * Tensors are batches [N, ...] of N samples of D contiguous elements each. The per-element
 * kernels run one invocation per element; element i belongs to sample n = i / D, whose per-sample
 * values (norms, step sizes, losses, flags) come from [N] buffers. The per-sample norms
 * themselves are deterministic reductions (src/ops/reduce_axes.ts), which split long samples
 * into chunks so no invocation loops past llvmpipe's limit.
 *
 * None of these is differentiated: attacks move x along a gradient, they never back-propagate
 * through their own updates.
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";

/** The bindings of a per-element kernel, in binding order (the op passes them the same way). */
interface ElementKernel {
  /** Per-element inputs [N·D], read-only. */
  elements: string[];
  /** Per-sample inputs [N], read-only. */
  samples: string[];
  /** The per-element output (written, or updated in place when the body reads it). */
  out: string;
  /** WGSL statements with `i` (element), `n` (sample) and `p` in scope; they write out[i]. */
  body: string;
}

function elementKernel({ elements, samples, out, body }: ElementKernel): string {
  const bindings = [
    ...elements.map((name) => `var<storage, read> ${name}: array<f32>;`),
    ...samples.map((name) => `var<storage, read> ${name}: array<f32>;`),
    `var<storage, read_write> ${out}: array<f32>;`,
    `var<uniform> p: Params;`,
  ].map((decl, b) => `@group(0) @binding(${b}) ${decl}`).join("\n");
  return /* wgsl */ `
${flatIndex}
// count = N·D elements; d = D elements per sample; alpha: step size; eps: the ball's radius.
struct Params { count: u32, d: u32, alpha: f32, eps: f32 }
${bindings}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.count) { return; }
  let n = i / p.d;
${body}
}`;
}

/** The step size: one for the batch (a parameter) or one per sample (APGD's eta). */
const stepSize = (perSample: boolean) => perSample ? "alpha[n]" : "p.alpha";

/**
 * L∞ step and projection in one pass:
 *   out = clamp(x + α·sign(g), max(x0 − ε, 0), min(x0 + ε, 1)).
 * The ball [x0 − ε, x0 + ε] and the box [0, 1] are both boxes, so their intersection is a box
 * and the clamp to it is the exact Euclidean projection. sign(0) = 0: no gradient, no move.
 */
export function signStepShader(alphaPerSample: boolean): string {
  return elementKernel({
    elements: ["x", "g", "x0"],
    samples: alphaPerSample ? ["alpha"] : [],
    out: "out",
    body: `
  let lo = max(x0[i] - p.eps, 0.0);
  let hi = min(x0[i] + p.eps, 1.0);
  out[i] = clamp(x[i] + ${stepSize(alphaPerSample)} * sign(g[i]), lo, hi);`,
  });
}

/** L∞ projection of any point: out = clamp(x_adv, max(x0 − ε, 0), min(x0 + ε, 1)). */
export const projectLinfShader = elementKernel({
  elements: ["x_adv", "x0"],
  samples: [],
  out: "out",
  body: `
  out[i] = clamp(x_adv[i], max(x0[i] - p.eps, 0.0), min(x0[i] + p.eps, 1.0));`,
});

/**
 * First half of an L2 step (or projection): the perturbation before projection,
 *   step:  δ = x + α·g/(‖g‖ + 1e-12) − x0   (a step of length α along g; none when g = 0)
 *   plain: δ = x_adv − x0.
 * Its per-sample norm ‖δ‖ is then reduced, and `l2ApplyShader` scales and clips.
 */
export function l2DeltaShader(step: boolean, alphaPerSample: boolean): string {
  if (!step) {
    return elementKernel({
      elements: ["x_adv", "x0"],
      samples: [],
      out: "delta",
      body: `
  delta[i] = x_adv[i] - x0[i];`,
    });
  }
  return elementKernel({
    elements: ["x", "g", "x0"],
    samples: ["g_norm", ...(alphaPerSample ? ["alpha"] : [])],
    out: "delta",
    body: `
  let unit = g[i] / (g_norm[n] + 1e-12);
  delta[i] = x[i] + ${stepSize(alphaPerSample)} * unit - x0[i];`,
  });
}

/**
 * Second half: project δ onto the L2 ball, δ·min(1, ε/‖δ‖), then clip to the box:
 *   out = clamp(x0 + δ·min(1, ε/‖δ‖), 0, 1).
 * Clipping after projecting keeps the norm within ε: with x0 in [0,1], clipping moves every
 * coordinate towards x0, so |out − x0| ≤ |δ| elementwise.
 */
export const l2ApplyShader = elementKernel({
  elements: ["x0", "delta"],
  samples: ["delta_norm"],
  out: "out",
  body: `
  let norm = delta_norm[n];
  let scale = select(1.0, p.eps / norm, norm > p.eps);
  out[i] = clamp(x0[i] + delta[i] * scale, 0.0, 1.0);`,
});

/** out = clamp(x, 0, 1). */
export const clip01Shader = elementKernel({
  elements: ["x"],
  samples: [],
  out: "out",
  body: `
  out[i] = clamp(x[i], 0.0, 1.0);`,
});

/**
 * Random start from a noise tensor u:
 *   scaled:   out = clamp(x + ε·u/(s + 1e-12), 0, 1), s = a per-sample scale of u
 *             (max|u| for APGD's L∞ start, ‖u‖₂ for the L2 start: the offset then has norm ε);
 *   unscaled: out = clamp(x + u, 0, 1) (u already ~ U(−ε, ε): PGD's L∞ start).
 */
export function randomStartShader(scaled: boolean): string {
  return elementKernel({
    elements: ["x", "u"],
    samples: scaled ? ["scale"] : [],
    out: "out",
    body: scaled
      ? `
  out[i] = clamp(x[i] + u[i] * (p.eps / (scale[n] + 1e-12)), 0.0, 1.0);`
      : `
  out[i] = clamp(x[i] + u[i], 0.0, 1.0);`,
  });
}

/** Per-sample masked copy: out = mask[n] ≠ 0 ? a : b. */
export const selectPerSampleShader = elementKernel({
  elements: ["a", "b"],
  samples: ["mask"],
  out: "out",
  body: `
  out[i] = select(b[i], a[i], mask[n] != 0.0);`,
});

/**
 * Keep-best rule, per sample: the new iterate replaces the best one when it is misclassified
 * and the best is not, or when both agree on that and the new loss is higher. So a sample keeps
 * the highest-loss iterate until one is misclassified, then the highest-loss misclassified one.
 * A NaN loss never wins on loss. Flags are f32 0/1; the best starts with flag −1 (always replaced).
 */
const better = /* wgsl */ `
fn is_better(loss: f32, mis: f32, best_loss: f32, best_mis: f32) -> bool {
  return mis > best_mis || (mis == best_mis && loss > best_loss);
}`;

/** Pass 1 of keep-best: copy the samples that improved into `best` (in place). */
export const keepBestCopyShader = better + elementKernel({
  elements: ["x"],
  samples: ["loss", "mis", "best_loss", "best_mis"],
  out: "best",
  body: `
  if (is_better(loss[n], mis[n], best_loss[n], best_mis[n])) { best[i] = x[i]; }`,
});

/**
 * Pass 2 of keep-best, one invocation per sample: update the best loss and flag in place. Runs
 * after pass 1, which must still see the old values.
 */
export const keepBestStatsShader = /* wgsl */ `
${flatIndex}
${better}
struct Params { count: u32, d: u32, alpha: f32, eps: f32 }
@group(0) @binding(0) var<storage, read> loss: array<f32>;
@group(0) @binding(1) var<storage, read> mis: array<f32>;
@group(0) @binding(2) var<storage, read_write> best_loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> best_mis: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = flat_index(gid, nwg);
  if (n >= p.count) { return; }
  if (is_better(loss[n], mis[n], best_loss[n], best_mis[n])) {
    best_loss[n] = loss[n];
    best_mis[n] = mis[n];
  }
}`;
