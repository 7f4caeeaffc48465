/**
 * Every performance knob of the device layer in one place (tfjs keeps its flags the same way).
 * Values are defaults; `initWebGpu()` options override them per run.
 */
export const tunables = {
  /**
   * Dispatches recorded into one compute pass before the command buffer is submitted.
   * Encoding is ~30 us per dispatch when batched and ~56 us with one submit each; tfjs uses 15,
   * onnxruntime 16 and CubeCL 32. Larger values delay the GPU's start on the first batch.
   */
  dispatchesPerSubmit: 32,
  /** Uniform parameter blocks kept (content-keyed) before the least recently used is dropped. */
  uniformCacheEntries: 4096,
  /** Free pooled bytes kept before `release` starts destroying buffers instead of pooling them. */
  maxPooledBytes: 1 << 30,
};

export type Tunables = typeof tunables;
