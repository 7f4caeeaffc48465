/**
 * APGD's per-sample bookkeeping (src/attacks/apgd.ts dispatches these). AutoAttack decides per
 * sample, on the host, when to halve the step size and restart from the best point; here every
 * such decision is a kernel that selects per sample, so the attack never reads anything back.
 *
 * Per-sample state, one f32 [N] buffer each:
 *   eta                   the step size (2·eps at the start)
 *   loss_best             the highest loss seen so far (the loss of x_best)
 *   loss_best_last_check  loss_best at the previous checkpoint
 *   prev_loss             the loss of the previous iterate
 *   increases             steps since the last checkpoint whose loss rose above the previous one
 *   halved                1 where the last checkpoint halved eta (1 before the first checkpoint,
 *                         as AutoAttack's `reduced_last_check`); also the mask of the samples that
 *                         restart from x_best
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";

const sampleKernelHeader = /* wgsl */ `
${flatIndex}
@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = flat_index(gid, nwg);
  if (n >= p.samples) { return; }`;

/**
 * After each gradient evaluation, per sample: count a step whose loss rose, remember the loss,
 * and raise loss_best. Runs after `trackBestShader`, which reads the old loss_best.
 */
export const observeLossShader = /* wgsl */ `
struct Params { samples: u32 }
@group(0) @binding(0) var<storage, read> loss: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss_best: array<f32>;
@group(0) @binding(2) var<storage, read_write> prev_loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> increases: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
${sampleKernelHeader}
  let l = loss[n];
  if (l > prev_loss[n]) { increases[n] += 1.0; }
  prev_loss[n] = l;
  if (l > loss_best[n]) { loss_best[n] = l; }
}`;

/**
 * A checkpoint after a window of k steps, per sample. Halve eta where
 *  - the loss rose in at most rho·k of the k steps (the iterates oscillate), or
 *  - eta was not halved at the previous checkpoint and loss_best has not improved since;
 * then start the next window. `halved` marks the samples that restart from x_best.
 */
export const checkpointShader = /* wgsl */ `
struct Params { samples: u32, window: f32, rho: f32 }
@group(0) @binding(0) var<storage, read> loss_best: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss_best_last_check: array<f32>;
@group(0) @binding(2) var<storage, read_write> increases: array<f32>;
@group(0) @binding(3) var<storage, read_write> halved: array<f32>;
@group(0) @binding(4) var<storage, read_write> eta: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
${sampleKernelHeader}
  let oscillates = increases[n] <= p.rho * p.window;
  let stalled = halved[n] == 0.0 && loss_best_last_check[n] >= loss_best[n];
  let halve = oscillates || stalled;
  if (halve) { eta[n] = 0.5 * eta[n]; }
  halved[n] = select(0.0, 1.0, halve);
  loss_best_last_check[n] = loss_best[n];
  increases[n] = 0.0;
}`;

/**
 * Per element, before `observeLossShader` raises loss_best: where the new loss beats loss_best
 * (strictly, as AutoAttack), copy the iterate and its gradient into x_best and grad_best.
 */
export const trackBestShader = /* wgsl */ `
${flatIndex}
struct Params { count: u32, d: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> loss: array<f32>;
@group(0) @binding(3) var<storage, read> loss_best: array<f32>;
@group(0) @binding(4) var<storage, read_write> x_best: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_best: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.count) { return; }
  let n = i / p.d;
  if (loss[n] > loss_best[n]) {
    x_best[i] = x[i];
    grad_best[i] = grad[i];
  }
}`;
