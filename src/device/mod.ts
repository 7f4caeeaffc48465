export { type AdapterClass, type Binding, createGpu, Gpu, type InitOptions } from "./gpu.ts";
export { currentGpu, disposeWebGpu, initWebGpu } from "./runtime.ts";
export { DeviceLostError, GpuError, NoAdapterError } from "./errors.ts";
export { type Params, params } from "./uniforms.ts";
export { type PoolStats, sizeClass } from "./buffer_pool.ts";
export { type Tunables, tunables } from "./tunables.ts";
