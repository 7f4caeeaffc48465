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
  /**
   * The same for operand textures (`textureOperands`): free textures kept for reuse. Each op
   * copies its operands into pooled textures and gives them back at once, so a few of each size
   * in use are enough; past this a released texture is destroyed.
   */
  maxPooledTextureBytes: 256 << 20,
  /**
   * Operand copies kept with their buffers for the next op that reads them (OperandCopyCache):
   * bytes of those no op holds at the moment, past which the least recently used go back to
   * the texture pool.
   */
  maxIdleOperandCopyBytes: 256 << 20,
  /**
   * Worker threads per logical CPU asked of Mesa's CPU drivers (lavapipe, llvmpipe), which run
   * one worker per CPU unless told otherwise. Each dispatch is cut into one fixed chunk of
   * workgroups per worker, with no work stealing, so a worker that loses its core for a moment
   * (to our JavaScript, the driver's queue thread, the OS) holds up the whole dispatch while the
   * other cores idle; with two workers per CPU the scheduler evens the chunks out. Measured on
   * lavapipe with 2 CPUs, ResNet-8 training step, interleaved processes: CPU use 155-177 % ->
   * 176-181 %, 173-217 -> 171-182 ms a step; 3 workers (chunks that do not split evenly over
   * 2 CPUs) were ~10 % slower than 2, and 6 or 8 no faster than 4. Read once, before the
   * first adapter request; an `LP_NUM_THREADS` set by the user wins. 1 keeps Mesa's default.
   */
  cpuDriverThreadsPerCpu: 2,
  /**
   * The CPU-tuned kernels (direct conv forward and gradients, fused batchnorm passes, matmul)
   * read their input operands through textures (src/device/operand_textures.ts) instead of
   * storage buffers: one copy per operand and op, then texel fetches, which lavapipe compiles
   * to gathers instead of a per-lane load loop. Measured on an AMD EPYC (Zen 3) VM: conv
   * 1.6-3.5x, matmul 1024 4.8x, ResNet-8 training step 2.6x.
   */
  textureOperands: true,
};

export type Tunables = typeof tunables;
