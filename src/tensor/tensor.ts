/**
 * Tensor: a shape, an element type and a GPU buffer (NCHW, contiguous, row-major).
 * Several tensors may share one buffer (reshape, detach); the buffer returns to the pool when
 * the last of them is disposed. Data reaches the host only through `toArray()`.
 */
import { currentGpu } from "../device/runtime.ts";
import type { Gpu } from "../device/gpu.ts";
import { BYTES_PER_ELEMENT, type DType, typedArray } from "./dtype.ts";
import { checkShape, fmt, resolveShape, type Shape, sizeOf } from "./shape.ts";
import { record } from "../autograd/tape.ts";
import { track } from "./scope.ts";

/** A pooled GPU buffer shared by the tensors that view it. */
export class Storage {
  refs = 1;
  constructor(readonly gpu: Gpu, readonly buffer: GPUBuffer, readonly bytes: number) {}

  retain(): this {
    this.refs++;
    return this;
  }

  release(): void {
    if (--this.refs === 0) this.gpu.releaseBuffer(this.buffer);
  }
}

let nextId = 1;

/** A tensor's data was read or bound after `dispose()` (or after the tidy() that owned it ended). */
export class DisposedTensorError extends Error {
  override name = "DisposedTensorError";
}

/** Throws a DisposedTensorError naming `op` when its input `t` was disposed. */
export function checkNotDisposed(op: string, t: Tensor): void {
  if (t.isDisposed) throw new DisposedTensorError(`${op}: input ${t.describe()} was used after dispose()`);
}

/** Hook set by the autograd module (which sits above tensors) so `t.backward()` works. */
export const autogradHooks: {
  backward: ((loss: Tensor, seed?: Tensor) => void) | null;
} = { backward: null };

export class Tensor {
  readonly id = nextId++;
  readonly size: number;
  /** Leaf tensors with `requiresGrad` receive `.grad` from `backward()` (parameters). */
  requiresGrad = false;
  grad: Tensor | null = null;
  /** Optional name (parameters), used in error messages and checkpoints. */
  name = "";
  #storage: Storage | null;

  constructor(readonly shape: Shape, readonly dtype: DType, storage: Storage) {
    this.size = sizeOf(shape);
    this.#storage = storage;
    track(this);
  }

  /** Allocates an uninitialised tensor (NaN-filled when the device poisons outputs). */
  static empty(shape: Shape, dtype: DType = "f32", op = "empty"): Tensor {
    checkShape(op, shape);
    const gpu = currentGpu();
    const bytes = Math.max(BYTES_PER_ELEMENT, sizeOf(shape) * BYTES_PER_ELEMENT);
    const storage = new Storage(gpu, gpu.pool.acquire(bytes, op), bytes);
    return new Tensor([...shape], dtype, storage);
  }

  get rank(): number {
    return this.shape.length;
  }

  get isDisposed(): boolean {
    return this.#storage === null;
  }

  get storage(): Storage {
    if (!this.#storage) {
      throw new DisposedTensorError(
        `Tensor ${this.describe()} was used after dispose(); keep() it or return it from tidy()`,
      );
    }
    return this.#storage;
  }

  get buffer(): GPUBuffer {
    return this.storage.buffer;
  }

  /** The buffer bound with this tensor's exact byte size (so WGSL arrayLength() is right). */
  get binding(): { buffer: GPUBuffer; size: number } {
    return { buffer: this.buffer, size: Math.max(BYTES_PER_ELEMENT, this.size * BYTES_PER_ELEMENT) };
  }

  get gpu(): Gpu {
    return this.storage.gpu;
  }

  /**
   * Writes recorded into this tensor's buffer so far (shared by every tensor that views it, as
   * PyTorch's version counter): autograd refuses a backward pass through an op whose saved
   * tensors changed in place after the op was recorded.
   */
  get version(): number {
    return this.gpu.bufferVersion(this.buffer);
  }

  /**
   * A new tensor sharing this one's buffer, with another shape of the same size. Not recorded
   * for autograd (ops use it for their outputs and inside gradient rules): no gradient flows
   * through an alias; `view` (or `reshape`) is the differentiable one.
   */
  alias(shape: Shape = this.shape): Tensor {
    if (sizeOf(shape) !== this.size) {
      throw new Error(`alias: cannot view ${fmt(this.shape)} as ${fmt(shape)}`);
    }
    return new Tensor([...shape], this.dtype, this.storage.retain());
  }

  /**
   * The same data with another shape (one dimension may be -1), sharing the buffer and recorded
   * for autograd like PyTorch's `view` (the gradient is dy viewed back). `op` names it in errors.
   */
  view(shape: Shape, op = "view"): Tensor {
    const resolved = resolveShape(op, this.shape, shape);
    return record(op, [this], this.alias(resolved), (dy) => [dy.alias(this.shape)], []);
  }

  /** Reads the data back to the host (the only GPU-to-host path). */
  async toArray(): Promise<Float32Array | Int32Array | Uint32Array> {
    const bytes = this.size * BYTES_PER_ELEMENT;
    if (bytes === 0) return typedArray(this.dtype, new ArrayBuffer(0));
    return typedArray(this.dtype, await this.gpu.read(this.buffer, bytes));
  }

  /** Reads a single-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item: tensor ${fmt(this.shape)} has ${this.size} elements`);
    return (await this.toArray())[0];
  }

  /** Back-propagates from this scalar; see `autograd/backward.ts`. */
  backward(seed?: Tensor): void {
    if (!autogradHooks.backward) throw new Error("backward: autograd module not loaded");
    autogradHooks.backward(this, seed);
  }

  dispose(): void {
    if (!this.#storage) return;
    this.#storage.release();
    this.#storage = null;
  }

  describe(): string {
    return `${this.name ? this.name + " " : ""}${this.dtype}${fmt(this.shape)}`;
  }

  toString(): string {
    return `Tensor(${this.describe()})`;
  }
}
