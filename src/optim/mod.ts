/** Optimizers that update parameters in place on the GPU, and learning-rate schedules. */
export { type NamedParams, Optimizer, type OptimizerState, type ParamState } from "./optimizer.ts";
export { SGD, type SgdOptions } from "./sgd.ts";
export { Adam, type AdamOptions, AdamW } from "./adam.ts";
export { applySchedule, constantLR, cosineLR, multiStepLR, type Schedule, stepLR } from "./schedule.ts";
