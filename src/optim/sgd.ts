/**
 * Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay, exactly
 * as torch.optim.SGD (the momentum buffer starts as the first step's gradient).
 */
import { sgdShader, type SgdSpec } from "../../shaders/optim.ts";
import { grid1d, launch, params } from "../ops/kernel.ts";
import { ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkHyper, type NamedParams, Optimizer, type ParamUpdate } from "./optimizer.ts";

export interface SgdOptions {
  params: NamedParams;
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
}

export class SGD extends Optimizer {
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  protected readonly bufferNames: readonly string[];
  readonly #spec: SgdSpec;

  constructor(
    { params, lr, momentum = 0, dampening = 0, nesterov = false, weightDecay = 0 }: SgdOptions,
  ) {
    super("SGD", params, lr);
    checkHyper("SGD", "momentum", momentum, 0);
    checkHyper("SGD", "dampening", dampening, 0);
    checkHyper("SGD", "weightDecay", weightDecay, 0);
    if (nesterov && (momentum <= 0 || dampening !== 0)) {
      throw new ShapeError("SGD", "Nesterov momentum requires momentum > 0 and dampening = 0");
    }
    this.momentum = momentum;
    this.dampening = dampening;
    this.nesterov = nesterov;
    this.weightDecay = weightDecay;
    this.bufferNames = momentum > 0 ? ["momentum_buffer"] : [];
    this.#spec = { momentum: momentum > 0, nesterov, weightDecay: weightDecay > 0 };
  }

  protected launchUpdate(group: ParamUpdate[]): void {
    const p = params().f32(this.lr, this.weightDecay, this.momentum, 1 - this.dampening);
    const bindings: Tensor[] = [];
    let start = 0;
    for (const { param, grad, state } of group) {
      p.u32(start, param.size, state.step === 1 ? 1 : 0, 0);
      start += param.size;
      bindings.push(param, grad, ...(this.momentum > 0 ? [state.buffers.momentum_buffer] : []));
    }
    launch("SGD.step", sgdShader(this.#spec, group.length), [...bindings, p], grid1d(start));
  }
}
