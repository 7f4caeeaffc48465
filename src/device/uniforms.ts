/**
 * Small uniform blocks of kernel parameters (sizes, strides, scalars), cached by content:
 * training repeats the same shapes every step, so almost every block is a cache hit.
 * Blocks are created mapped and never written again, which keeps them ordered correctly
 * against dispatches that are recorded but not yet submitted.
 */
export class Params {
  #words: number[] = [];
  #kinds: string[] = [];

  u32(...values: number[]): this {
    for (const v of values) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw new RangeError(`Params.u32: ${v} is not a u32`);
      }
      this.#words.push(v);
      this.#kinds.push("u");
    }
    return this;
  }

  i32(...values: number[]): this {
    for (const v of values) {
      if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
        throw new RangeError(`Params.i32: ${v} is not an i32`);
      }
      this.#words.push(v);
      this.#kinds.push("i");
    }
    return this;
  }

  f32(...values: number[]): this {
    for (const v of values) {
      this.#words.push(v);
      this.#kinds.push("f");
    }
    return this;
  }

  /** Packs the words, padded to 16 bytes (uniform blocks are 16-byte aligned). */
  bytes(): ArrayBuffer {
    const n = Math.max(4, Math.ceil(this.#words.length / 4) * 4);
    const buf = new ArrayBuffer(n * 4);
    const u = new Uint32Array(buf), i = new Int32Array(buf), f = new Float32Array(buf);
    this.#words.forEach((v, k) => {
      const kind = this.#kinds[k];
      if (kind === "u") u[k] = v;
      else if (kind === "i") i[k] = v;
      else f[k] = v;
    });
    return buf;
  }
}

export function params(): Params {
  return new Params();
}

export class UniformCache {
  #blocks = new Map<string, GPUBuffer>();
  #retired: GPUBuffer[] = [];

  constructor(private device: GPUDevice, private capacity: () => number) {}

  get(p: Params): GPUBuffer {
    const bytes = p.bytes();
    const key = String.fromCharCode(...new Uint16Array(bytes));
    let buffer = this.#blocks.get(key);
    if (buffer) {
      // Re-insert to mark as most recently used (Map keeps insertion order).
      this.#blocks.delete(key);
      this.#blocks.set(key, buffer);
      return buffer;
    }
    buffer = this.device.createBuffer({
      size: bytes.byteLength,
      usage: GPUBufferUsage.UNIFORM,
      mappedAtCreation: true,
      label: "params",
    });
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(bytes));
    buffer.unmap();
    this.#blocks.set(key, buffer);
    if (this.#blocks.size > this.capacity()) {
      const [oldKey, old] = this.#blocks.entries().next().value!;
      this.#blocks.delete(oldKey);
      // It may still be bound by a recorded dispatch: destroy only after the next submit.
      this.#retired.push(old);
    }
    return buffer;
  }

  /** Called after a submit: retired blocks are no longer referenced by unsubmitted work. */
  afterSubmit(): void {
    for (const b of this.#retired) b.destroy();
    this.#retired.length = 0;
  }

  get size(): number {
    return this.#blocks.size;
  }
}
