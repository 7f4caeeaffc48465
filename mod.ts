/**
 * Public API. Layers, from the bottom: device -> tensor -> autograd -> ops -> optim -> nn ->
 * models -> data / io -> attacks -> eval / purify -> train / study.
 */
export * from "./src/device/mod.ts";
export { DisposedTensorError, Tensor } from "./src/tensor/tensor.ts";
export type { DType } from "./src/tensor/dtype.ts";
export { type Shape, ShapeError } from "./src/tensor/shape.ts";
export { keep, tidy } from "./src/tensor/scope.ts";
export { backward, detach, grad, gradScope, InPlaceModificationError } from "./src/autograd/backward.ts";
export { isRecording, noGrad } from "./src/autograd/tape.ts";
export * from "./src/ops/mod.ts";
export * from "./src/optim/mod.ts";
export * from "./src/nn/module.ts";
export * from "./src/nn/layers.ts";
export * from "./src/models/zoo.ts";
export * from "./src/data/mod.ts";
export * from "./src/io/mod.ts";
/** Attacks live in a namespace (`attacks.pgd`, `attacks.square`): `square` is also the x² op. */
export * as attacks from "./src/attacks/mod.ts";
export * from "./src/eval/mod.ts";
export * from "./src/purify/mod.ts";
export * from "./src/study/mod.ts";
