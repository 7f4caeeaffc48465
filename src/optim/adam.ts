/**
 * Adam (L2 weight decay added to the gradient, as torch.optim.Adam) and AdamW (decoupled
 * decay p -= lr * weight_decay * p, as torch.optim.AdamW). The bias corrections
 * 1 - beta^t depend on each parameter's step t, so they are computed here on the host in
 * float64 and passed as uniforms; the kernel source never changes between steps.
 */
import { adamShader, type AdamSpec } from "../../shaders/optim.ts";
import { grid1d, launch, params } from "../ops/kernel.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkHyper, type NamedParams, Optimizer, type ParamUpdate } from "./optimizer.ts";

export interface AdamOptions {
  params: NamedParams;
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

export class Adam extends Optimizer {
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  protected readonly bufferNames: readonly string[] = ["exp_avg", "exp_avg_sq"];
  readonly #decoupled: boolean;
  readonly #spec: AdamSpec;

  constructor(
    { params, lr = 1e-3, betas = [0.9, 0.999], eps = 1e-8, weightDecay = 0 }: AdamOptions,
    decoupled = false,
  ) {
    const name = decoupled ? "AdamW" : "Adam";
    super(name, params, lr);
    checkHyper(name, "betas[0]", betas[0], 0, 1);
    checkHyper(name, "betas[1]", betas[1], 0, 1);
    checkHyper(name, "eps", eps, 0);
    checkHyper(name, "weightDecay", weightDecay, 0);
    this.betas = [betas[0], betas[1]];
    this.eps = eps;
    this.weightDecay = weightDecay;
    this.#decoupled = decoupled;
    this.#spec = { l2: !decoupled && weightDecay > 0, decoupled: decoupled && weightDecay > 0 };
  }

  protected launchUpdate(group: ParamUpdate[]): void {
    const [beta1, beta2] = this.betas;
    const p = params()
      .f32(this.weightDecay, this.#decoupled ? 1 - this.lr * this.weightDecay : 1)
      .f32(1 - beta1, beta2, 1 - beta2, this.eps, 0, 0);
    const bindings: Tensor[] = [];
    let start = 0;
    for (const { param, grad, state } of group) {
      const t = state.step;
      p.u32(start, param.size).f32(this.lr / (1 - beta1 ** t), Math.sqrt(1 - beta2 ** t));
      start += param.size;
      bindings.push(param, grad, state.buffers.exp_avg, state.buffers.exp_avg_sq);
    }
    launch(`${this.name}.step`, adamShader(this.#spec, group.length), [...bindings, p], grid1d(start));
  }
}

/** Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW. */
export class AdamW extends Adam {
  constructor(options: AdamOptions) {
    super({ ...options, weightDecay: options.weightDecay ?? 1e-2 }, true); // torch's default decay
  }
}
