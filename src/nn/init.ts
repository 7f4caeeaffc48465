/**
 * Weight initialisation matching PyTorch's defaults, so results are comparable with it.
 * torch.nn.Conv2d / Linear use kaiming_uniform_(a = sqrt(5)) for weights, which works out to
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for biases.
 */
import { rand } from "../ops/random.ts";
import type { Shape } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** Uniform in [-bound, bound). Draws from the default generator (see `manualSeed`). */
export function uniformInit(shape: Shape, bound: number): Tensor {
  return rand(shape, { low: -bound, high: bound });
}

/** PyTorch's default for conv and linear weights and biases: bound 1/sqrt(fan_in). */
export function defaultBound(fanIn: number): number {
  return 1 / Math.sqrt(fanIn);
}

/** Kaiming-normal-like uniform for ReLU nets: U(-sqrt(6/fan_in), sqrt(6/fan_in)) (gain sqrt(2)). */
export function kaimingUniformRelu(shape: Shape, fanIn: number): Tensor {
  return uniformInit(shape, Math.sqrt(6 / fanIn));
}
