/**
 * Operand copies kept between ops: the operand texture (src/device/operand_textures.ts) that
 * holds a buffer's data stays with that buffer after the op that asked for it, and the next op
 * that reads the same buffer through a texture of the same format takes it without a new copy.
 *
 * Why: lavapipe runs a buffer-to-texture copy as one memcpy on its queue thread while its
 * compute workers wait, and a training step reads many tensors twice (a conv input in the
 * forward pass and again in the filter gradient; a dy in the data gradient and the filter
 * gradient). Measured on ResNet-8's step (batch 64, lavapipe): 82 copies, 180 MB a step, of
 * which 40 copies (86 MB) repeated one made earlier in the step or the step before.
 *
 * A copy is valid until its buffer changes. Every path that writes a buffer ends its copies
 * here: a dispatch that binds the buffer to a binding its shader does not declare read-only
 * (the same test as autograd's write counts: `readOnlyBindings` in pipeline_cache.ts), a host
 * write, and the return of the buffer to the pool (its next tensor is another one). Commands
 * run in the order they were recorded, so a dropped texture handed out again is overwritten
 * only after every read of its old contents.
 */
import { type OperandFormat, type OperandTexturePool, textureBytes } from "./operand_textures.ts";

interface Copy {
  texture: GPUTexture;
  format: OperandFormat;
  texels: number;
  /** Ops that hold it now (between `take`/`add` and `release`). */
  readers: number;
  /** Its buffer changed while it was held: back to the pool when the last reader is done. */
  stale: boolean;
}

export class OperandCopyCache {
  /** Copies by source buffer, in least recently used order (a Map keeps insertion order). */
  #byBuffer = new Map<GPUBuffer, Copy[]>();
  #byTexture = new Map<GPUTexture, Copy>();
  #idleBytes = 0;
  /** Reads served by a kept copy, and copies made (tests and benchmarks read them). */
  hits = 0;
  copies = 0;

  constructor(
    private pool: OperandTexturePool,
    /** Bytes of kept copies no op holds, past which the least recently used are dropped. */
    private maxIdleBytes: () => number,
  ) {}

  /** The kept copy of `buffer`'s first `texels` texels in `format`, now held; or undefined. */
  take(buffer: GPUBuffer, format: OperandFormat, texels: number): GPUTexture | undefined {
    const copies = this.#byBuffer.get(buffer);
    const copy = copies?.find((c) => c.format === format && c.texels === texels);
    if (!copy) return undefined;
    if (copy.readers++ === 0) this.#idleBytes -= textureBytes(copy.texture);
    // Most recently used last.
    this.#byBuffer.delete(buffer);
    this.#byBuffer.set(buffer, copies!);
    this.hits++;
    return copy.texture;
  }

  /** Keeps a fresh copy of `buffer` (already recorded into `texture`), held by its caller. */
  add(buffer: GPUBuffer, format: OperandFormat, texels: number, texture: GPUTexture): void {
    const copy: Copy = { texture, format, texels, readers: 1, stale: false };
    const copies = this.#byBuffer.get(buffer);
    this.#byBuffer.delete(buffer);
    this.#byBuffer.set(buffer, [...(copies ?? []), copy]);
    this.#byTexture.set(texture, copy);
    this.copies++;
  }

  /**
   * The caller has recorded every dispatch that reads `texture`. A kept copy stays kept (or,
   * if its buffer changed meanwhile, goes back to the pool).
   */
  release(texture: GPUTexture): void {
    const copy = this.#byTexture.get(texture);
    if (!copy || copy.readers === 0) {
      throw new Error(`operand texture ${texture.label} released without being held (released twice?)`);
    }
    if (--copy.readers > 0) return;
    if (copy.stale) this.#drop(copy);
    else {
      this.#idleBytes += textureBytes(texture);
      this.#evict();
    }
  }

  /** `buffer` is about to change (or to hold another tensor): its copies are no longer its data. */
  invalidate(buffer: GPUBuffer): void {
    const copies = this.#byBuffer.get(buffer);
    if (!copies) return;
    this.#byBuffer.delete(buffer);
    for (const copy of copies) {
      if (copy.readers > 0) copy.stale = true;
      else {
        this.#idleBytes -= textureBytes(copy.texture);
        this.#drop(copy);
      }
    }
  }

  /** Drops every copy no op holds (their textures go back to the pool). */
  clear(): void {
    for (const buffer of [...this.#byBuffer.keys()]) this.invalidate(buffer);
  }

  /** Bytes of kept copies that no op holds. */
  get idleBytes(): number {
    return this.#idleBytes;
  }

  /** Least recently used idle copies go until the idle bytes are within the budget. */
  #evict(): void {
    for (const [buffer, copies] of this.#byBuffer) {
      if (this.#idleBytes <= this.maxIdleBytes()) return;
      for (const copy of copies.filter((c) => c.readers === 0)) {
        this.#idleBytes -= textureBytes(copy.texture);
        this.#drop(copy);
      }
      const held = copies.filter((c) => c.readers > 0);
      if (held.length) this.#byBuffer.set(buffer, held);
      else this.#byBuffer.delete(buffer);
    }
  }

  #drop(copy: Copy): void {
    this.#byTexture.delete(copy.texture);
    this.pool.release(copy.texture);
  }
}
