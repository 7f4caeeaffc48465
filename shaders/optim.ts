/**
 * Optimizer updates: one fused kernel per parameter tensor, one invocation per element, that
 * reads the gradient and rewrites the parameter and its state buffers in place. In-place
 * buffers are bound once, read_write (binding a buffer as both read and read_write in one
 * dispatch is a validation error).
 *
 * Only structural choices (momentum buffer or not, Nesterov, L2 or decoupled decay) specialise
 * the source. Everything that changes between steps (learning rate, bias corrections, the
 * first-step flag) comes from the uniform block, so every step reuses the same pipeline.
 */
import { wgsl } from "wgsl-preprocessor";
import { flatIndex, memoizeShader, WORKGROUP_1D } from "./common.ts";

export interface SgdSpec {
  momentum: boolean;
  nesterov: boolean;
  weightDecay: boolean;
}

/**
 * torch.optim.SGD, per element:
 *   d = g + weight_decay * p
 *   buf = d on the first step, else momentum * buf + (1 - dampening) * d
 *   d = d + momentum * buf (Nesterov) or buf
 *   p = p - lr * d
 */
export const sgdShader = memoizeShader(generateSgdShader);

function generateSgdShader(spec: SgdSpec): string {
  const paramsBinding = spec.momentum ? 3 : 2;
  return wgsl`
${flatIndex}
struct Params {
  n: u32, first_step: u32, lr: f32, weight_decay: f32,
  momentum: f32, one_minus_dampening: f32,
}
@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
#if ${spec.momentum}
@group(0) @binding(2) var<storage, read_write> momentum_buffer: array<f32>;
#endif
@group(0) @binding(${paramsBinding}) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  let w = param[i];
  var d = grad[i];
#if ${spec.weightDecay}
  d = d + p.weight_decay * w;
#endif
#if ${spec.momentum}
  var buf = d;
  if (p.first_step == 0u) { buf = p.momentum * momentum_buffer[i] + p.one_minus_dampening * d; }
  momentum_buffer[i] = buf;
#if ${spec.nesterov}
  d = d + p.momentum * buf;
#else
  d = buf;
#endif
#endif
  param[i] = w - p.lr * d;
}`;
}

export interface AdamSpec {
  /** Adam's L2 penalty: weight_decay * p added to the gradient. */
  l2: boolean;
  /** AdamW's decoupled decay: p scaled by (1 - lr * weight_decay) before the update. */
  decoupled: boolean;
}

/**
 * torch.optim.Adam / AdamW, per element (t = this parameter's step count):
 *   g = g + weight_decay * p                     (Adam with weight decay)
 *   p = p * (1 - lr * weight_decay)              (AdamW)
 *   m = m + (1 - beta1) * (g - m)                (torch's lerp; = beta1 m + (1 - beta1) g)
 *   v = beta2 * v + (1 - beta2) * g * g
 *   p = p - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),  step_size = lr / (1 - beta1^t)
 * The bias corrections depend on t, so the host computes them each step (uniforms).
 */
export const adamShader = memoizeShader(generateAdamShader);

function generateAdamShader(spec: AdamSpec): string {
  return wgsl`
${flatIndex}
struct Params {
  n: u32, _pad: u32, weight_decay: f32, decay_factor: f32,
  one_minus_beta1: f32, beta2: f32, one_minus_beta2: f32, eps: f32,
  step_size: f32, bias_correction2_sqrt: f32,
}
@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg_sq: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  var w = param[i];
  var g = grad[i];
#if ${spec.l2}
  g = g + p.weight_decay * w;
#endif
#if ${spec.decoupled}
  w = w * p.decay_factor;
#endif
  let m_old = exp_avg[i];
  let m = m_old + p.one_minus_beta1 * (g - m_old);
  let v = exp_avg_sq[i] * p.beta2 + p.one_minus_beta2 * (g * g);
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  let denom = sqrt(v) / p.bias_correction2_sqrt + p.eps;
  param[i] = w - p.step_size * (m / denom);
}`;
}
