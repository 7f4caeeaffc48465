/**
 * Operand textures: a copy of a storage buffer's f32 data in a texture, for kernels that read
 * their operands with `textureLoad` instead of storage loads.
 *
 * Why: on CPU adapters a storage (or workgroup) load compiles to a loop over the SIMD lanes that
 * builds each vector through a stack slot, and that pattern stalls store forwarding. On an AMD
 * EPYC (Zen 3) VM with lavapipe (Mesa 22.3) `bench/load_costs.ts` gives 12.8 ns per vec4 storage
 * load per invocation against 0.8-0.9 for a texel fetch, which lavapipe compiles to a gather;
 * on a Xeon (AVX-512) 0.9-1.1 against 0.7-0.8. A copy into a texture is a row-by-row memcpy
 * in the driver, paid once per operand and op.
 *
 * Layout: texel i of the buffer (4 floats in `rgba32float`, vec4 reads; 1 float in `r32float`,
 * scalar reads) sits at (i % OPERAND_TEXTURE_WIDTH, i / OPERAND_TEXTURE_WIDTH), so a kernel turns
 * its linear index into texture coordinates with a mask and a shift (see
 * shaders/common.ts `operandTextureLoad`). Textures are pooled by format and height and are
 * reused as soon as the op that used one has recorded its dispatches: commands run in the order
 * they were recorded, so a later copy into the same texture waits for the earlier reads.
 */

import { OPERAND_TEXTURE_WIDTH } from "../../shaders/common.ts";

export type OperandFormat = "rgba32float" | "r32float";

/** The format of an operand read as vec4s (4 floats a texel) or as single floats. */
export const operandFormat = (vec4: boolean): OperandFormat => vec4 ? "rgba32float" : "r32float";

/** Bytes per texel of each format. */
export const TEXEL_BYTES: Record<OperandFormat, number> = { rgba32float: 16, r32float: 4 };

/**
 * Rows of the pooled texture for `rows` rows of data: a power of two. llvmpipe compiles a
 * variant of a shader for each static state of the textures bound to it, and whether a side is
 * a power of two is part of that state: heights that are not (tried: 8 classes per octave)
 * compiled new variants of every kernel as tensor sizes changed, turning a 41 s test into 6 min.
 * A texture may be up to twice the data; the pool's byte budget bounds what stays allocated.
 */
function heightClass(rows: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, rows)));
}

/** Bytes of an operand texture. */
export const textureBytes = (t: GPUTexture) => t.width * t.height * TEXEL_BYTES[t.format as OperandFormat];

export class OperandTexturePool {
  #free = new Map<string, GPUTexture[]>();
  #views = new Map<GPUTexture, GPUTextureView>();
  #bytesAllocated = 0;
  #bytesFree = 0;
  /** Textures handed out so far (tests check that a kernel path really used them). */
  acquired = 0;

  constructor(
    private device: GPUDevice,
    /** Bytes of free textures kept for reuse; past it a released texture is destroyed. */
    private maxFreeBytes: () => number,
    /** Called before destroying textures (submits recorded work that may still read them). */
    private beforeDestroy: () => void,
  ) {}

  /** Whether `texels` texels fit one texture of this device. */
  fits(texels: number): boolean {
    const side = this.device.limits.maxTextureDimension2D;
    return side >= OPERAND_TEXTURE_WIDTH && texels <= OPERAND_TEXTURE_WIDTH * side;
  }

  /** A texture of `format` with room for `texels` texels (see `fits`); give it back with `release`. */
  acquire(format: OperandFormat, texels: number): GPUTexture {
    const rows = Math.ceil(texels / OPERAND_TEXTURE_WIDTH);
    const height = Math.min(heightClass(rows), this.device.limits.maxTextureDimension2D);
    const key = `${format}:${height}`;
    this.acquired++;
    const texture = this.#free.get(key)?.pop();
    if (texture) {
      this.#bytesFree -= textureBytes(texture);
      return texture;
    }
    const created = this.device.createTexture({
      label: `operand ${format} ${OPERAND_TEXTURE_WIDTH}x${height}`,
      size: [OPERAND_TEXTURE_WIDTH, height],
      format,
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
    });
    this.#bytesAllocated += textureBytes(created);
    return created;
  }

  release(texture: GPUTexture): void {
    const bytes = textureBytes(texture);
    if (this.#bytesFree + bytes > this.maxFreeBytes()) {
      this.beforeDestroy();
      this.#destroy(texture);
      return;
    }
    this.#bytesFree += bytes;
    const key = `${texture.format}:${texture.height}`;
    const list = this.#free.get(key);
    if (list) list.push(texture);
    else this.#free.set(key, [texture]);
  }

  /** The one view of a texture that bind groups use. */
  view(texture: GPUTexture): GPUTextureView {
    let view = this.#views.get(texture);
    if (!view) {
      view = texture.createView();
      this.#views.set(texture, view);
    }
    return view;
  }

  /** Bytes of the live operand textures (handed out or free). */
  get bytesAllocated(): number {
    return this.#bytesAllocated;
  }

  /** Destroys every free texture. */
  trim(): void {
    this.beforeDestroy();
    for (const list of this.#free.values()) list.forEach((t) => this.#destroy(t));
    this.#free.clear();
    this.#bytesFree = 0;
  }

  #destroy(texture: GPUTexture): void {
    this.#bytesAllocated -= textureBytes(texture);
    this.#views.delete(texture);
    texture.destroy();
  }
}
