/**
 * Optimizer updates: fused kernels that read the gradients and rewrite the parameters and
 * their state buffers in place, one invocation per element. In-place buffers are bound once,
 * read_write (binding a buffer as both read and read_write in one dispatch is a validation
 * error).
 *
 * One dispatch updates `count` parameter tensors laid end to end over the invocations: tensor
 * k owns invocations [start_k, start_k + n_k) and its own bindings (param_k, grad_k, state).
 * Small tensors (a network's biases and batchnorm scales) then share a dispatch instead of
 * paying one each (~50 us on llvmpipe, most of their cost). Every invocation runs each
 * tensor's body with its lanes masked (how llvmpipe runs divergent branches), so only small
 * tensors are grouped (src/optim/optimizer.ts `UPDATE_GROUPING`); a large one is a group of one.
 *
 * Only structural choices (momentum buffer or not, Nesterov, L2 or decoupled decay) and the
 * tensor count specialise the source. Everything that changes between steps (learning rate,
 * bias corrections, first-step flags) comes from the uniform block.
 */
import { wgsl } from "wgsl-preprocessor";
import { flatIndex, memoizeShader, WORKGROUP_1D } from "./common.ts";

export interface SgdSpec {
  momentum: boolean;
  nesterov: boolean;
  weightDecay: boolean;
}

/**
 * The multi-tensor kernel: `bindings(k, first)` declares tensor k's `perTensor` storage
 * bindings from binding `first`, and `body(k)` updates its element j. `tensor` is the body of
 * the per-tensor uniform struct (16 bytes, starting with start and n), `globals` the Params
 * fields before the tensors.
 */
function multiTensorShader(
  count: number,
  perTensor: number,
  globals: string,
  tensor: string,
  bindings: (k: number, first: number) => string[],
  body: (k: number) => string,
): string {
  const tensors = Array.from({ length: count }, (_, k) => k);
  return /* wgsl */ `
${flatIndex}
struct Tensor { ${tensor} }
struct Params {
  ${globals}
  tensors: array<Tensor, ${count}>,
}
${tensors.flatMap((k) => bindings(k, perTensor * k)).join("\n")}
@group(0) @binding(${perTensor * count}) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  ${
    tensors.map((k) =>
      `{
    // Wraps past n when i < start.
    let j = i - p.tensors[${k}].start;
    if (j < p.tensors[${k}].n) {${body(k)}
    }
  }`
    ).join("\n  ")
  }
}`;
}

/**
 * torch.optim.SGD, per element:
 *   d = g + weight_decay * p
 *   buf = d on the first step, else momentum * buf + (1 - dampening) * d
 *   d = d + momentum * buf (Nesterov) or buf
 *   p = p - lr * d
 */
export const sgdShader = memoizeShader((spec: SgdSpec, count: number) =>
  multiTensorShader(
    count,
    spec.momentum ? 3 : 2,
    "lr: f32, weight_decay: f32, momentum: f32, one_minus_dampening: f32,",
    "start: u32, n: u32, first_step: u32, _pad: u32",
    (k, b) => [
      `@group(0) @binding(${b}) var<storage, read_write> param_${k}: array<f32>;`,
      `@group(0) @binding(${b + 1}) var<storage, read> grad_${k}: array<f32>;`,
      ...(spec.momentum
        ? [`@group(0) @binding(${b + 2}) var<storage, read_write> momentum_${k}: array<f32>;`]
        : []),
    ],
    (k) =>
      wgsl`
      let w = param_${k}[j];
      var d = grad_${k}[j];
#if ${spec.weightDecay}
      d = d + p.weight_decay * w;
#endif
#if ${spec.momentum}
      var buf = d;
      if (p.tensors[${k}].first_step == 0u) {
        buf = p.momentum * momentum_${k}[j] + p.one_minus_dampening * d;
      }
      momentum_${k}[j] = buf;
#if ${spec.nesterov}
      d = d + p.momentum * buf;
#else
      d = buf;
#endif
#endif
      param_${k}[j] = w - p.lr * d;`,
  )
);

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
export const adamShader = memoizeShader((spec: AdamSpec, count: number) =>
  multiTensorShader(
    count,
    4,
    `weight_decay: f32, decay_factor: f32, one_minus_beta1: f32, beta2: f32,
  one_minus_beta2: f32, eps: f32, _pad0: f32, _pad1: f32,`,
    "start: u32, n: u32, step_size: f32, bias_correction2_sqrt: f32",
    (k, b) => [
      `@group(0) @binding(${b}) var<storage, read_write> param_${k}: array<f32>;`,
      `@group(0) @binding(${b + 1}) var<storage, read> grad_${k}: array<f32>;`,
      `@group(0) @binding(${b + 2}) var<storage, read_write> exp_avg_${k}: array<f32>;`,
      `@group(0) @binding(${b + 3}) var<storage, read_write> exp_avg_sq_${k}: array<f32>;`,
    ],
    (k) =>
      wgsl`
      var w = param_${k}[j];
      var g = grad_${k}[j];
#if ${spec.l2}
      g = g + p.weight_decay * w;
#endif
#if ${spec.decoupled}
      w = w * p.decay_factor;
#endif
      let m_old = exp_avg_${k}[j];
      let m = m_old + p.one_minus_beta1 * (g - m_old);
      let v = exp_avg_sq_${k}[j] * p.beta2 + p.one_minus_beta2 * (g * g);
      exp_avg_${k}[j] = m;
      exp_avg_sq_${k}[j] = v;
      let denom = sqrt(v) / p.tensors[${k}].bias_correction2_sqrt + p.eps;
      param_${k}[j] = w - p.tensors[${k}].step_size * (m / denom);`,
  )
);
