/**
 * The GPU data path. `GpuDataset` uploads a whole uint8 dataset once (4 bytes per u32 word,
 * ~47 MB for Fashion-MNIST's training set instead of 188 MB as floats). `DataLoader` then makes
 * each batch with ONE kernel (shaders/augment.ts) that gathers the batch's samples, converts them
 * to f32 in [0, 1] and applies random crop / flip per sample. Per epoch the host uploads one
 * permutation; per batch only a parameter block changes. Nothing is ever read back.
 *
 * Reproducibility: the order of epoch e is a Fisher-Yates shuffle driven by a PRNG seeded from
 * (seed, e), and augmentation draws are Philox(counter = (position in epoch, e, stream, 0),
 * key = seed). So `loader.state()` = { epoch, batch } is all a checkpoint needs: a loader built
 * with the same options and `seek`ed to that state produces the same batches, bit for bit.
 */
import { augmentShader } from "../../shaders/augment.ts";
import { WORKGROUP_1D } from "../../shaders/common.ts";
import { currentGpu } from "../device/runtime.ts";
import { grid1d, launch, output, params } from "../ops/kernel.ts";
import { philox4x32 } from "../ops/random.ts";
import { keep } from "../tensor/scope.ts";
import { Tensor } from "../tensor/tensor.ts";
import { type Dataset, imageBytes } from "./dataset.ts";

export interface UploadOptions {
  /**
   * Largest dataset chunk buffer in bytes (default: the device's maxStorageBufferBindingSize).
   * Tests lower it to exercise the multi-chunk path on small data.
   */
  maxChunkBytes?: number;
}

/** A dataset resident on the GPU: packed image bytes in chunks of whole samples, and labels. */
export class GpuDataset {
  readonly name: string;
  readonly shape: [number, number, number];
  readonly classes: string[];
  readonly length: number;
  /** Host copy of the labels (N bytes): used to choose class-balanced subsets (`limit`). */
  readonly hostLabels: Uint8Array;
  /** u32 words, 4 image bytes each; chunk k holds samples [k·samplesPerChunk, ...). */
  readonly chunks: Tensor[];
  readonly samplesPerChunk: number;
  /** i32 [N]. */
  readonly labels: Tensor;

  private constructor(ds: Dataset, chunks: Tensor[], samplesPerChunk: number, labels: Tensor) {
    this.name = ds.name;
    this.shape = [...ds.shape];
    this.classes = ds.classes;
    this.length = ds.labels.length;
    this.hostLabels = ds.labels.slice();
    this.chunks = chunks;
    this.samplesPerChunk = samplesPerChunk;
    this.labels = labels;
  }

  /** Uploads a host dataset (once; the tensors live until `dispose()`). */
  static upload(ds: Dataset, options: UploadOptions = {}): GpuDataset {
    const gpu = currentGpu();
    const n = ds.labels.length;
    const sampleBytes = imageBytes(ds);
    if (n === 0) throw new RangeError(`GpuDataset.upload: ${ds.name} is empty`);
    if (ds.images.length !== n * sampleBytes) {
      throw new RangeError(
        `GpuDataset.upload: ${ds.name} has ${ds.images.length} image bytes, expected ${n * sampleBytes}`,
      );
    }
    const limit = options.maxChunkBytes ??
      Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
    const samplesPerChunk = Math.min(n, Math.floor(Math.floor(limit / 4) * 4 / sampleBytes));
    if (samplesPerChunk < 1) {
      throw new RangeError(
        `GpuDataset.upload: one ${sampleBytes}-byte sample exceeds the ${limit}-byte chunk limit`,
      );
    }
    const count = Math.ceil(n / samplesPerChunk);
    const maxChunks = gpu.limits.maxStorageBuffersPerShaderStage - 4;
    if (count > maxChunks) {
      throw new RangeError(
        `GpuDataset.upload: ${ds.name} (${ds.images.length} bytes) needs ${count} buffers of at most ${limit} ` +
          `bytes, but the device binds only ${maxChunks} besides the loader's own 4; use a smaller dataset`,
      );
    }
    const chunks: Tensor[] = [];
    for (let k = 0; k < count; k++) {
      const bytes = ds.images.subarray(
        k * samplesPerChunk * sampleBytes,
        Math.min(n, (k + 1) * samplesPerChunk) * sampleBytes,
      );
      const words = Math.ceil(bytes.length / 4);
      // Reinterpret in place when aligned, else copy into a zero-padded word buffer.
      const packed =
        bytes.byteOffset % 4 === 0 && bytes.length % 4 === 0 && bytes.buffer instanceof ArrayBuffer
          ? new Uint32Array(bytes.buffer, bytes.byteOffset, words)
          : new Uint32Array(words);
      if (packed.buffer !== bytes.buffer) new Uint8Array(packed.buffer).set(bytes);
      const t = keep(Tensor.empty([words], "u32", "dataset.upload"));
      gpu.write(t.buffer, packed);
      chunks.push(t);
    }
    const labels = keep(Tensor.empty([n], "i32", "dataset.upload"));
    gpu.write(labels.buffer, Int32Array.from(ds.labels));
    return new GpuDataset(ds, chunks, samplesPerChunk, labels);
  }

  dispose(): void {
    for (const t of this.chunks) t.dispose();
    this.labels.dispose();
  }
}

export interface AugmentOptions {
  /** Random crop: pad every side with `padding` zeros, crop back to H x W at a random corner. */
  crop?: { padding: number };
  /** Random horizontal flip (probability 1/2). */
  flip?: boolean;
}

export interface LoaderOptions {
  batchSize: number;
  /** A new seeded permutation every epoch (default true). False: the fixed order below. */
  shuffle?: boolean;
  /** Seeds the permutations and the augmentation draws (default 0). */
  seed?: number;
  /** Philox stream of the augmentation draws (default 0): two loaders with one seed can differ. */
  stream?: number;
  /** Skip the last, smaller batch of an epoch (default false). */
  dropLast?: boolean;
  /**
   * Use only `limit` samples: the first `limit` of the class-balanced order, which takes the
   * 1st sample of every class (in label order, samples in dataset order), then the 2nd of every
   * class, and so on (classes that run out are skipped). Independent of the seed, so the subset
   * is the same in every run. Without `limit` all samples are used in dataset order.
   */
  limit?: number;
  /**
   * With `limit`: "fixed" (default) keeps that one class-balanced subset for every epoch;
   * "fresh" takes a new random subset each epoch, the first `limit` of a shuffled pass over the
   * whole dataset (an iteration-capped epoch, as "epochs of 625 iterations" in AToP's code).
   */
  limitSubset?: "fixed" | "fresh";
  augment?: AugmentOptions;
  /** Where to start (default { epoch: 0, batch: 0 }); see `seek`. */
  start?: LoaderState;
  /** Kernel layout; default per adapter class ("row" on CPU adapters, "element" on GPUs). */
  layout?: "row" | "element";
}

export interface LoaderState {
  /** Epoch of the next batch. */
  epoch: number;
  /** Index of the next batch within that epoch. */
  batch: number;
}

export interface Batch {
  /** f32 [B, C, H, W] in [0, 1], augmented. Owned by the caller: dispose it after the step. */
  images: Tensor;
  /** i32 [B]. Owned by the caller. */
  labels: Tensor;
  /** The dataset indices of the batch's samples (host side, for logging and tests). */
  indices: Uint32Array;
  epoch: number;
  batch: number;
}

/** sfc32, a small fast PRNG (PractRand-clean); state seeded by Philox from (seed, epoch). */
class Sfc32 {
  #a: number;
  #b: number;
  #c: number;
  #d: number;
  constructor(seed: number, epoch: number) {
    // Counter word 3 = 1 keeps these draws apart from the augmentation draws (word 3 = 0).
    [this.#a, this.#b, this.#c, this.#d] = philox4x32(
      [epoch >>> 0, Math.floor(epoch / 2 ** 32) >>> 0, 0, 1],
      seedKey(seed),
    );
    for (let i = 0; i < 12; i++) this.next();
  }
  next(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t;
  }
}

function seedKey(seed: number): [number, number] {
  return [seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0];
}

/**
 * The sample order of one epoch: Fisher-Yates over `base` with sfc32 seeded from (seed, epoch).
 * j is drawn as floor(u · (i+1)) with u a 32-bit uniform: the bias, < (i+1)/2^32, is negligible.
 */
export function epochOrder(
  base: Uint32Array,
  seed: number,
  epoch: number,
  shuffle: boolean,
): Uint32Array<ArrayBuffer> {
  const order = base.slice();
  if (!shuffle) return order;
  const rng = new Sfc32(seed, epoch);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor((rng.next() / 2 ** 32) * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

/** The class-balanced order used by `limit` (see LoaderOptions.limit). */
export function balancedOrder(labels: Uint8Array): Uint32Array {
  const byClass: number[][] = [];
  labels.forEach((label, i) => (byClass[label] ??= []).push(i));
  const classes = byClass.filter((c) => c !== undefined);
  const order = new Uint32Array(labels.length);
  let k = 0;
  for (let round = 0; k < labels.length; round++) {
    for (const members of classes) if (round < members.length) order[k++] = members[round];
  }
  return order;
}

function checkInteger(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`DataLoader: ${name} must be an integer >= ${min}, got ${value}`);
  }
}

/**
 * Batches of a GpuDataset. Iterating (`for (const b of loader)`) yields the remaining batches of
 * the current epoch and leaves the state at the start of the next; `next()` yields one batch and
 * rolls over epochs by itself.
 */
export class DataLoader {
  readonly dataset: GpuDataset;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly stream: number;
  readonly dropLast: boolean;
  readonly augment: { padding: number; crop: boolean; flip: boolean };
  readonly layout: "row" | "element";
  /** Samples per epoch (`limit` or the dataset size). */
  readonly samples: number;
  /** Whether a `limit` subset is the same every epoch or drawn afresh (see LoaderOptions). */
  readonly limitSubset: "fixed" | "fresh";
  /** Batches per epoch. */
  readonly batchesPerEpoch: number;
  #base: Uint32Array;
  #ownsDataset: boolean;
  #epoch = 0;
  #batch = 0;
  #order: { epoch: number; host: Uint32Array<ArrayBuffer>; gpu: Tensor } | null = null;

  constructor(dataset: GpuDataset | Dataset, options: LoaderOptions) {
    this.#ownsDataset = !(dataset instanceof GpuDataset);
    this.dataset = dataset instanceof GpuDataset ? dataset : GpuDataset.upload(dataset);
    // Options are checked after the upload (the dataset's labels are needed): a rejected
    // loader frees what it uploaded.
    try {
      checkInteger("batchSize", options.batchSize, 1);
      this.batchSize = options.batchSize;
      this.shuffle = options.shuffle ?? true;
      this.seed = options.seed ?? 0;
      this.stream = options.stream ?? 0;
      checkInteger("seed", this.seed, 0);
      checkInteger("stream", this.stream, 0);
      if (this.stream > 0xffffffff) throw new RangeError(`DataLoader: stream must fit in 32 bits`);
      this.dropLast = options.dropLast ?? false;
      const padding = options.augment?.crop?.padding ?? 0;
      checkInteger("augment.crop.padding", padding, 0);
      this.augment = {
        padding,
        crop: options.augment?.crop !== undefined,
        flip: options.augment?.flip ?? false,
      };
      this.layout = options.layout ?? (currentGpu().adapterClass === "cpu" ? "row" : "element");

      const n = this.dataset.length;
      this.limitSubset = options.limitSubset ?? "fixed";
      if (this.limitSubset !== "fixed" && this.limitSubset !== "fresh") {
        throw new RangeError(`DataLoader: limitSubset must be "fixed" or "fresh", got ${this.limitSubset}`);
      }
      if (this.limitSubset === "fresh" && !this.shuffle) {
        throw new RangeError(`DataLoader: limitSubset "fresh" draws a random subset and needs shuffle`);
      }
      if (options.limit !== undefined) {
        checkInteger("limit", options.limit, 1);
        this.samples = Math.min(options.limit, n);
        this.#base = this.limitSubset === "fresh"
          ? Uint32Array.from({ length: n }, (_, i) => i)
          : balancedOrder(this.dataset.hostLabels).subarray(0, this.samples);
      } else {
        this.#base = Uint32Array.from({ length: n }, (_, i) => i);
        this.samples = n;
      }
      this.batchesPerEpoch = this.dropLast
        ? Math.floor(this.samples / this.batchSize)
        : Math.ceil(this.samples / this.batchSize);
      if (this.batchesPerEpoch === 0) {
        throw new RangeError(
          `DataLoader: dropLast with batchSize ${this.batchSize} > ${this.samples} samples leaves no batch`,
        );
      }
      if (options.start) this.seek(options.start);
    } catch (e) {
      if (this.#ownsDataset) this.dataset.dispose();
      throw e;
    }
  }

  /** Where the next batch comes from (save it in checkpoints). */
  state(): LoaderState {
    return { epoch: this.#epoch, batch: this.#batch };
  }

  /** Continues from a saved state: the next batch is batch `batch` of epoch `epoch`. */
  seek(state: LoaderState): void {
    checkInteger("state.epoch", state.epoch, 0);
    checkInteger("state.batch", state.batch, 0);
    if (state.batch > this.batchesPerEpoch) {
      throw new RangeError(
        `DataLoader: batch ${state.batch} is past the ${this.batchesPerEpoch} batches of an epoch`,
      );
    }
    // batch == batchesPerEpoch means "epoch finished": the next batch is the next epoch's first.
    this.#epoch = state.batch === this.batchesPerEpoch ? state.epoch + 1 : state.epoch;
    this.#batch = state.batch === this.batchesPerEpoch ? 0 : state.batch;
  }

  /** The dataset indices of epoch `epoch`, in order (host side). */
  order(epoch: number): Uint32Array<ArrayBuffer> {
    const order = epochOrder(this.#base, this.seed, epoch, this.shuffle);
    // "fresh": the epoch's shuffle of every sample, cut at `limit`.
    return order.length === this.samples ? order : order.slice(0, this.samples);
  }

  /** Produces the next batch and advances the state (into the next epoch after the last). */
  next(): Batch {
    const epoch = this.#epoch, index = this.#batch;
    if (this.#order?.epoch !== epoch) {
      this.#order?.gpu.dispose();
      const host = this.order(epoch);
      const gpuOrder = keep(Tensor.empty([host.length], "u32", "loader.order"));
      currentGpu().write(gpuOrder.buffer, host);
      this.#order = { epoch, host, gpu: gpuOrder };
    }
    const offset = index * this.batchSize;
    const size = Math.min(this.batchSize, this.samples - offset);
    const batch = this.#gather(this.#order.gpu, epoch, offset, size);
    if (++this.#batch === this.batchesPerEpoch) {
      this.#batch = 0;
      this.#epoch++;
    }
    return { ...batch, indices: this.#order.host.slice(offset, offset + size), epoch, batch: index };
  }

  /** The remaining batches of the current epoch. */
  *[Symbol.iterator](): Generator<Batch> {
    const epoch = this.#epoch;
    while (this.#epoch === epoch) yield this.next();
  }

  #gather(order: Tensor, epoch: number, offset: number, size: number): { images: Tensor; labels: Tensor } {
    const ds = this.dataset;
    const [c, h, w] = ds.shape;
    const images = output("loader.batch", [size, c, h, w]);
    const labels = output("loader.batch", [size], "i32");
    const total = this.layout === "row" ? size * c * h : size * c * h * w;
    const [seedLo, seedHi] = seedKey(this.seed);
    const p = params().u32(
      size,
      offset,
      c,
      h,
      w,
      ds.samplesPerChunk,
      this.augment.crop ? this.augment.padding : 0,
      epoch >>> 0,
      this.stream,
      seedLo,
      seedHi,
      total,
    );
    const source = augmentShader({
      chunks: ds.chunks.length,
      crop: this.augment.crop,
      flip: this.augment.flip,
      layout: this.layout,
    });
    launch(
      "loader.batch",
      source,
      [images, labels, order, ds.labels, ...ds.chunks, p],
      grid1d(total, WORKGROUP_1D),
    );
    return { images, labels };
  }

  /** Frees the epoch's order (and the dataset, if the loader uploaded it itself). */
  dispose(): void {
    this.#order?.gpu.dispose();
    this.#order = null;
    if (this.#ownsDataset) this.dataset.dispose();
  }
}
