/**
 * Buffer pool keyed by size class. GPU buffers are not reliably freed by the JS garbage
 * collector, and creating them is slow, so released buffers are kept and handed out again.
 *
 * Size classes: multiples of 256 bytes up to 64 KiB, then 8 classes per power of two, so a
 * reused buffer wastes at most 12.5 % of its size.
 */
export const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.UNIFORM |
  GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

export function sizeClass(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes));
  if (b <= 65536) return Math.ceil(b / 256) * 256;
  const step = 2 ** (Math.floor(Math.log2(b)) - 3);
  return Math.ceil(b / step) * step;
}

export interface PoolStats {
  /** Bytes of buffers currently handed out. */
  bytesInUse: number;
  /** Bytes of all live buffers the pool created (in use + free). */
  bytesAllocated: number;
  /** Bytes of free buffers waiting to be reused. */
  bytesPooled: number;
  buffersInUse: number;
  buffersCreated: number;
  reuses: number;
}

export class BufferPool {
  #free = new Map<number, GPUBuffer[]>();
  #stats: PoolStats = {
    bytesInUse: 0,
    bytesAllocated: 0,
    bytesPooled: 0,
    buffersInUse: 0,
    buffersCreated: 0,
    reuses: 0,
  };

  constructor(
    private device: GPUDevice,
    private maxPooledBytes: () => number,
    private beforeDestroy: () => void,
  ) {}

  acquire(bytes: number, label: string): GPUBuffer {
    const size = sizeClass(bytes);
    const list = this.#free.get(size);
    let buffer = list?.pop();
    if (buffer) {
      this.#stats.reuses++;
      this.#stats.bytesPooled -= size;
    } else {
      buffer = this.device.createBuffer({ size, usage: STORAGE_USAGE, label });
      this.#stats.buffersCreated++;
      this.#stats.bytesAllocated += size;
    }
    this.#stats.bytesInUse += size;
    this.#stats.buffersInUse++;
    return buffer;
  }

  release(buffer: GPUBuffer): void {
    const size = buffer.size;
    this.#stats.bytesInUse -= size;
    this.#stats.buffersInUse--;
    if (this.#stats.bytesPooled + size > this.maxPooledBytes()) {
      this.beforeDestroy();
      buffer.destroy();
      this.#stats.bytesAllocated -= size;
      return;
    }
    let list = this.#free.get(size);
    if (!list) this.#free.set(size, list = []);
    list.push(buffer);
    this.#stats.bytesPooled += size;
  }

  /** Destroys every pooled (free) buffer. */
  trim(): void {
    this.beforeDestroy();
    for (const list of this.#free.values()) {
      for (const b of list) {
        this.#stats.bytesAllocated -= b.size;
        b.destroy();
      }
    }
    this.#free.clear();
    this.#stats.bytesPooled = 0;
  }

  stats(): PoolStats {
    return { ...this.#stats };
  }
}
