/**
 * Batched command encoding: dispatches go into one open compute pass, and the command buffer
 * is submitted every `dispatchesPerSubmit` dispatches or when someone needs the results
 * (readback, a host write, destroying a buffer).
 */
export class BatchedEncoder {
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #pending = 0;
  /** Total dispatches and submits, for benchmarks and tests. */
  dispatches = 0;
  submits = 0;
  lastOp = "";

  constructor(
    private device: GPUDevice,
    private perSubmit: () => number,
    private afterSubmit: () => void,
  ) {}

  dispatch(
    op: string,
    pipeline: GPUComputePipeline,
    bindGroup: GPUBindGroup,
    x: number,
    y = 1,
    z = 1,
  ): void {
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    if (!this.#pass) this.#pass = this.#encoder.beginComputePass();
    this.#pass.setPipeline(pipeline);
    this.#pass.setBindGroup(0, bindGroup);
    this.#pass.dispatchWorkgroups(x, y, z);
    this.lastOp = op;
    this.dispatches++;
    if (++this.#pending >= this.perSubmit()) this.flush();
  }

  /** Records a buffer copy after the work recorded so far. */
  copy(src: GPUBuffer, dst: GPUBuffer, bytes: number): void {
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    this.#endPass();
    this.#encoder.copyBufferToBuffer(src, 0, dst, 0, bytes);
    this.#pending++;
  }

  /**
   * Records a copy of the first `texels` texels of `src` into `dst`, row-major with
   * `texelsPerRow` texels per row (whole rows, then the partial last one), after the work
   * recorded so far.
   */
  copyToTexture(
    src: GPUBuffer,
    dst: GPUTexture,
    texels: number,
    texelsPerRow: number,
    texelBytes: number,
  ): void {
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    this.#endPass();
    const fullRows = Math.floor(texels / texelsPerRow), rest = texels % texelsPerRow;
    const bytesPerRow = texelsPerRow * texelBytes;
    if (fullRows > 0) {
      this.#encoder.copyBufferToTexture({ buffer: src, bytesPerRow }, { texture: dst }, [
        texelsPerRow,
        fullRows,
      ]);
    }
    if (rest > 0) {
      this.#encoder.copyBufferToTexture(
        { buffer: src, offset: fullRows * bytesPerRow, bytesPerRow },
        { texture: dst, origin: [0, fullRows] },
        [rest, 1],
      );
    }
    this.#pending++;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (!this.#encoder) return;
    this.#endPass();
    this.device.queue.submit([this.#encoder.finish()]);
    this.#encoder = null;
    this.#pending = 0;
    this.submits++;
    this.afterSubmit();
  }
}
