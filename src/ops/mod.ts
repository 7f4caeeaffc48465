/** Every op, by family. Each family's file holds its forward dispatch and gradient rule. */
export * from "./creation.ts";
export * from "./random.ts";
export * from "./arithmetic.ts";
export * from "./reduce.ts";
export { sumToShape } from "./reduce_axes.ts";
export * from "./loss.ts";
export * from "./batchnorm.ts";
export * from "./pool.ts";
export * from "./unary.ts";
export * from "./reduce_extra.ts";
export * from "./shape_ops.ts";
export * from "./matmul.ts";
export * from "./metrics.ts";
export * from "./conv2d.ts";
export * from "./grid_sample.ts";
export * from "./gated_activation.ts";
