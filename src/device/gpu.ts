/**
 * The device layer: adapter selection, device creation with the limits the kernels need,
 * error handling, and the shared services every op uses (buffer pool, pipeline cache,
 * uniform cache, batched encoder, operand textures and the copies kept in them, readback).
 */
import { BufferPool, type PoolStats, sizeClass } from "./buffer_pool.ts";
import { BatchedEncoder } from "./encoder.ts";
import { DeviceLostError, GpuError, NoAdapterError } from "./errors.ts";
import { OPERAND_TEXTURE_WIDTH } from "../../shaders/common.ts";
import { OperandCopyCache } from "./operand_copies.ts";
import { operandFormat, OperandTexturePool, TEXEL_BYTES } from "./operand_textures.ts";
import { PipelineCache } from "./pipeline_cache.ts";
import { type Tunables, tunables as defaultTunables } from "./tunables.ts";
import { type Params, UniformCache } from "./uniforms.ts";

/** Kernel variants are chosen per adapter class: what is fastest on llvmpipe is not on a GPU. */
export type AdapterClass = "cpu" | "gpu";

export interface InitOptions {
  powerPreference?: GPUPowerPreference;
  /** Refuse CPU fallback adapters (lavapipe, llvmpipe, WARP). */
  requireGpu?: boolean;
  /** Say nothing about the adapter on stdout. */
  quiet?: boolean;
  /** Overrides for the device tunables. */
  tunables?: Partial<Tunables>;
  /** Fill every op output with NaN before the op runs, so unwritten elements show (tests). */
  poisonOutputs?: boolean;
}

/** One binding of a dispatch: a storage buffer, an operand texture, or a uniform parameter block. */
export type Binding =
  | GPUBuffer
  | GPUTexture
  | Params
  | { buffer: GPUBuffer; size: number; offset?: number };

/** Limits the kernels rely on, requested up to what the adapter offers. */
const WANTED_LIMITS = [
  "maxStorageBuffersPerShaderStage",
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxUniformBufferBindingSize",
  "maxUniformBuffersPerShaderStage",
  "maxComputeWorkgroupsPerDimension",
  "maxTextureDimension2D",
] as const;

const OPTIONAL_FEATURES: GPUFeatureName[] = ["shader-f16", "timestamp-query"];

/** Free readback (staging) buffers kept between reads. */
const MAX_FREE_STAGING = 4;

export class Gpu {
  readonly pool: BufferPool;
  readonly pipelines: PipelineCache;
  readonly uniforms: UniformCache;
  readonly encoder: BatchedEncoder;
  readonly operandTextures: OperandTexturePool;
  readonly operandCopies: OperandCopyCache;
  readonly tunables: Tunables;
  readonly adapterName: string;
  readonly adapterClass: AdapterClass;
  /**
   * Worker threads of a CPU adapter: lavapipe runs each workgroup on one of them, so a grid of
   * fewer workgroups leaves some idle. Read once: Mesa reads `LP_NUM_THREADS` when it starts.
   */
  readonly cpuWorkers: number;
  poisonOutputs: boolean;
  #pendingError: Error | null = null;
  #lost: Error | null = null;
  #staging: GPUBuffer[] = [];
  /** Writes recorded into each buffer so far (see `bufferVersion`). */
  #versions = new WeakMap<GPUBuffer, number>();

  constructor(
    readonly device: GPUDevice,
    readonly adapterInfo: GPUAdapterInfo,
    readonly isFallbackAdapter: boolean,
    options: InitOptions = {},
  ) {
    this.tunables = { ...defaultTunables, ...options.tunables };
    this.poisonOutputs = options.poisonOutputs ?? false;
    this.adapterName = adapterInfo.description || adapterInfo.device || adapterInfo.vendor ||
      "unknown adapter";
    this.adapterClass = isFallbackAdapter ? "cpu" : "gpu";
    this.cpuWorkers = cpuDriverWorkers(this.tunables.cpuDriverThreadsPerCpu);
    this.encoder = new BatchedEncoder(
      device,
      () => this.tunables.dispatchesPerSubmit,
      () => this.uniforms.afterSubmit(),
    );
    this.pool = new BufferPool(
      device,
      () => this.tunables.maxPooledBytes,
      () => this.encoder.flush(),
    );
    this.pipelines = new PipelineCache(device);
    this.operandTextures = new OperandTexturePool(
      device,
      () => this.tunables.maxPooledTextureBytes,
      () => this.encoder.flush(),
    );
    this.operandCopies = new OperandCopyCache(
      this.operandTextures,
      () => this.tunables.maxIdleOperandCopyBytes,
    );
    this.uniforms = new UniformCache(device, () => this.tunables.uniformCacheEntries);

    device.addEventListener("uncapturederror", (event) => {
      const error = (event as GPUUncapturedErrorEvent).error;
      const kind = error instanceof GPUOutOfMemoryError ? "out-of-memory" : "validation";
      this.#pendingError ??= new GpuError(
        this.adapterName,
        kind,
        error.message,
        this.encoder.lastOp,
      );
    });
    device.lost.then((info) => {
      this.#lost = new DeviceLostError(
        this.adapterName,
        info.reason,
        info.message,
        this.encoder.lastOp,
      );
    });
  }

  get features(): string[] {
    return [...this.device.features];
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /** Throws the first asynchronous error WebGPU reported, naming the adapter and the op. */
  throwIfFailed(): void {
    if (this.#lost) throw this.#lost;
    const e = this.#pendingError;
    if (e) {
      this.#pendingError = null;
      throw e;
    }
  }

  /** Records one compute dispatch. Bindings are numbered 0.. in the order given. */
  dispatch(
    op: string,
    source: string,
    bindings: Binding[],
    workgroups: readonly number[],
    entryPoint = "main",
  ): void {
    if (this.#lost) throw this.#lost;
    // WebGPU reports validation errors later, on the event loop, when later ops are recorded
    // already: an error scope around this op's pipeline and bind group names the op that failed.
    this.device.pushErrorScope("validation");
    try {
      this.#record(op, source, bindings, workgroups, entryPoint);
    } finally {
      this.device.popErrorScope().then((error) => {
        if (error) this.#pendingError ??= new GpuError(this.adapterName, "validation", error.message, op);
      }, () => {}); // a lost device rejects; device.lost reports that
    }
  }

  #record(
    op: string,
    source: string,
    bindings: Binding[],
    workgroups: readonly number[],
    entryPoint: string,
  ): void {
    const { pipeline, layout, readOnly } = this.pipelines.get(op, source, entryPoint);
    const entries: GPUBindGroupEntry[] = bindings.map((b, binding) => {
      if (b instanceof GPUBuffer) return { binding, resource: { buffer: b } };
      if (b instanceof GPUTexture) return { binding, resource: this.operandTextures.view(b) };
      if ("buffer" in b) {
        return { binding, resource: { buffer: b.buffer, size: b.size, offset: b.offset ?? 0 } };
      }
      return { binding, resource: { buffer: this.uniforms.get(b) } };
    });
    const bindGroup = this.device.createBindGroup({
      label: op,
      layout,
      entries,
    });
    const [x, y = 1, z = 1] = workgroups;
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new RangeError(
        `${op}: dispatch of [${x}, ${y}, ${z}] workgroups exceeds the limit of ${max} per dimension`,
      );
    }
    if (x === 0 || y === 0 || z === 0) return;
    // Every buffer the dispatch may write changes (see bufferVersion).
    bindings.forEach((b, binding) => {
      if (readOnly.has(binding)) return;
      if (b instanceof GPUBuffer) this.#wrote(b);
      else if ("buffer" in b) this.#wrote(b.buffer);
    });
    this.encoder.dispatch(op, pipeline, bindGroup, x, y, z);
  }

  /**
   * A texture holding the first `bytes` of `buffer` (see OperandTexturePool): the copy kept from
   * an earlier op if the buffer has not changed since (OperandCopyCache), else one copied after
   * the work recorded so far. 4 floats a texel for vec4 reads, 1 for scalar reads. Give it back
   * with `releaseOperandTexture` once the dispatches that read it are recorded. Undefined when
   * the data does not fit a texture of this device (the caller then reads the buffer).
   */
  operandTexture(buffer: GPUBuffer, bytes: number, vec4: boolean): GPUTexture | undefined {
    if (this.#lost) throw this.#lost;
    if (!this.operandTextureFits(bytes, vec4)) return undefined;
    const format = operandFormat(vec4), texelBytes = TEXEL_BYTES[format];
    const texels = bytes / texelBytes;
    const kept = this.operandCopies.take(buffer, format, texels);
    if (kept) return kept;
    const texture = this.operandTextures.acquire(format, texels);
    this.encoder.copyToTexture(buffer, texture, texels, OPERAND_TEXTURE_WIDTH, texelBytes);
    this.operandCopies.add(buffer, format, texels, texture);
    return texture;
  }

  /** Whether `bytes` of f32 data fit an operand texture (whole texels, within the size limit). */
  operandTextureFits(bytes: number, vec4: boolean): boolean {
    const texelBytes = TEXEL_BYTES[operandFormat(vec4)];
    return bytes > 0 && bytes % texelBytes === 0 && this.operandTextures.fits(bytes / texelBytes);
  }

  /** Every operand texture is a copy kept with its buffer (OperandCopyCache): it stays there. */
  releaseOperandTexture(texture: GPUTexture): void {
    this.operandCopies.release(texture);
  }

  /** Returns a tensor's buffer to the pool (its next tensor is another: its copies go). */
  releaseBuffer(buffer: GPUBuffer): void {
    this.operandCopies.invalidate(buffer);
    this.pool.release(buffer);
  }

  /** Writes host data into a buffer, after all work recorded so far. */
  write(buffer: GPUBuffer, data: ArrayBufferView<ArrayBuffer>, offset = 0): void {
    // queue.writeBuffer runs before the next submit; flush so that earlier dispatches that
    // used this (pooled, reused) buffer see its old contents.
    this.encoder.flush();
    this.#wrote(buffer);
    this.device.queue.writeBuffer(buffer, offset, data.buffer, data.byteOffset, data.byteLength);
  }

  /**
   * How many writes to `buffer` have been recorded: dispatches that bind it to a binding their
   * shader does not declare read-only (pipeline_cache.ts), and host writes. Autograd compares it
   * with the count when an op was recorded, to refuse a backward pass through a tensor changed
   * in place since (tape.ts).
   */
  bufferVersion(buffer: GPUBuffer): number {
    return this.#versions.get(buffer) ?? 0;
  }

  /** `buffer` changes: one more write counted, and its operand copies are no longer its data. */
  #wrote(buffer: GPUBuffer): void {
    this.operandCopies.invalidate(buffer);
    this.#versions.set(buffer, this.bufferVersion(buffer) + 1);
  }

  /** Copies `bytes` of a buffer back to the host. The only path from GPU to host. */
  async read(buffer: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    this.throwIfFailed();
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const staging = this.#takeStaging(size);
    this.encoder.copy(buffer, staging, size);
    this.encoder.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, size);
    } catch (e) {
      this.throwIfFailed();
      throw e;
    }
    const out = staging.getMappedRange(0, size).slice(0, bytes);
    staging.unmap();
    this.#staging.push(staging);
    // Reads in flight each hold their own; past a few free ones, the smallest go.
    this.#staging.sort((a, b) => a.size - b.size);
    while (this.#staging.length > MAX_FREE_STAGING) this.#staging.shift()!.destroy();
    this.throwIfFailed();
    return out;
  }

  /**
   * A free readback buffer of at least `size` bytes (the smallest that fits), or a new one of its
   * size class; free ones too small for it are destroyed (a larger read supersedes them).
   */
  #takeStaging(size: number): GPUBuffer {
    const index = this.#staging.findIndex((s) => s.size >= size);
    if (index >= 0) return this.#staging.splice(index, 1)[0];
    for (const s of this.#staging) s.destroy();
    this.#staging = [];
    return this.device.createBuffer({
      size: sizeClass(size),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: "readback",
    });
  }

  /** Bytes of the free readback buffers kept for the next reads. */
  get stagingBytes(): number {
    return this.#staging.reduce((sum, s) => sum + s.size, 0);
  }

  /** Waits until the GPU has finished all submitted work (for timing). */
  async sync(): Promise<void> {
    this.encoder.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.throwIfFailed();
  }

  /**
   * The buffer pool's counters, and the bytes of operand textures (scratch copies, reused) and
   * of the free readback buffers.
   */
  memory(): PoolStats & { operandTextureBytes: number; stagingBytes: number } {
    return {
      ...this.pool.stats(),
      operandTextureBytes: this.operandTextures.bytesAllocated,
      stagingBytes: this.stagingBytes,
    };
  }

  destroy(): void {
    this.encoder.flush();
    this.pool.trim();
    this.operandCopies.clear();
    this.operandTextures.trim();
    for (const s of this.#staging) s.destroy();
    this.device.destroy();
  }
}

/**
 * Mesa's EGL probe prints "XDG_RUNTIME_DIR is invalid" on headless Linux (CI, servers) when the
 * variable is unset. Compute needs no display, so point it at the temp dir before the probe.
 */
function quietMesaOnHeadlessLinux(): void {
  try {
    if (Deno.build.os === "linux" && !Deno.env.get("XDG_RUNTIME_DIR")) {
      Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("TMPDIR") ?? "/tmp");
    }
  } catch {
    // No --allow-env: the warning is cosmetic.
  }
}

/** Mesa caps its CPU drivers' worker threads at this many. */
const MESA_MAX_THREADS = 32;

/** Mesa's CPU-driver workers for `threadsPerCpu` per logical CPU. */
function cpuDriverThreads(threadsPerCpu: number): number {
  return Math.min(MESA_MAX_THREADS, Math.max(1, Math.round(threadsPerCpu * navigator.hardwareConcurrency)));
}

/**
 * The workers Mesa's CPU drivers run: `LP_NUM_THREADS` when readable, else what createGpu asks
 * for (`threadsPerCpu`; 1 is Mesa's default, one per logical CPU).
 */
function cpuDriverWorkers(threadsPerCpu: number): number {
  try {
    const set = Number(Deno.env.get("LP_NUM_THREADS"));
    if (set > 0) return Math.min(MESA_MAX_THREADS, set);
  } catch {
    // No --allow-env (or no Deno): what the tunable asks for.
  }
  return cpuDriverThreads(threadsPerCpu);
}

/**
 * Asks Mesa's CPU drivers for `threadsPerCpu` workers per logical CPU (see the tunable
 * `cpuDriverThreadsPerCpu`). Mesa reads `LP_NUM_THREADS` when the driver starts, so this runs
 * before the first adapter request; other drivers ignore the variable.
 */
export function spreadCpuDriverWork(threadsPerCpu: number): void {
  try {
    if (threadsPerCpu === 1 || Deno.env.get("LP_NUM_THREADS")) return;
    Deno.env.set("LP_NUM_THREADS", String(cpuDriverThreads(threadsPerCpu)));
  } catch {
    // No --allow-env: the driver keeps its default.
  }
}

/** Finds an adapter, preferring a real GPU, and creates a device with the limits we need. */
export async function createGpu(options: InitOptions = {}): Promise<Gpu> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) {
    throw new NoAdapterError("this runtime has no navigator.gpu");
  }
  quietMesaOnHeadlessLinux();
  spreadCpuDriverWork(options.tunables?.cpuDriverThreadsPerCpu ?? defaultTunables.cpuDriverThreadsPerCpu);
  const adapter = await navigator.gpu.requestAdapter({
    powerPreference: options.powerPreference ?? "high-performance",
  });
  if (!adapter) {
    const backend = Deno?.env?.get?.("DENO_WEBGPU_BACKEND");
    throw new NoAdapterError(backend ? `DENO_WEBGPU_BACKEND=${backend}` : "");
  }
  const info = adapter.info;
  // deno-lint-ignore no-explicit-any
  const isFallback = Boolean((adapter as any).isFallbackAdapter ?? (info as any).isFallbackAdapter);
  if (isFallback && options.requireGpu) {
    throw new NoAdapterError(`only the CPU fallback adapter ${info.description} is available`);
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of WANTED_LIMITS) {
    const value = adapter.limits[name];
    if (typeof value === "number") requiredLimits[name] = value;
  }
  const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const gpu = new Gpu(device, info, isFallback, options);
  if (!options.quiet && isFallback) {
    console.error(
      `running on CPU adapter ${gpu.adapterName} (no GPU found): expect a few GFLOP/s; ` +
        `kernels use their CPU-tuned variants`,
    );
  }
  return gpu;
}
