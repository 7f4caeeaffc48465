/** Attacks (see docs ATTACKS.md for the constants and types.ts for the contract). */
export * from "./types.ts";
export * from "./projection.ts";
export * from "./gradient.ts";
export * from "./losses.ts";
export * from "./fgsm.ts";
export * from "./pgd.ts";
export * from "./apgd.ts";
export * from "./square.ts";
export * from "./stadv.ts";
export * from "./autoattack.ts";
export * from "./registry.ts";
