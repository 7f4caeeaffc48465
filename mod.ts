/**
 * Public API. Layers, from the bottom: device -> tensor -> autograd -> ops -> optim.
 */
export * from "./src/device/mod.ts";
export { Tensor } from "./src/tensor/tensor.ts";
export type { DType } from "./src/tensor/dtype.ts";
export { type Shape, ShapeError } from "./src/tensor/shape.ts";
export { keep, tidy } from "./src/tensor/scope.ts";
export { backward, detach, grad, gradScope } from "./src/autograd/backward.ts";
export { isRecording, noGrad } from "./src/autograd/tape.ts";
export * from "./src/ops/mod.ts";
export * from "./src/optim/mod.ts";
