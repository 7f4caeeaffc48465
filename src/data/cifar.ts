/**
 * CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from a folder, in the OFFICIAL binary formats:
 *
 *   CIFAR-10  (cifar-10-binary.tar.gz -> cifar-10-batches-bin/):
 *     data_batch_1.bin .. data_batch_5.bin (train), test_batch.bin (test), 10,000 records each;
 *     record = 1 label byte (0..9) + 3,072 pixel bytes.
 *   CIFAR-100 (cifar-100-binary.tar.gz -> cifar-100-binary/):
 *     train.bin (50,000 records), test.bin (10,000);
 *     record = 1 coarse label byte (0..19) + 1 fine label byte (0..99) + 3,072 pixel bytes.
 *     We use the fine labels (100 classes).
 *
 * The 3,072 pixel bytes are 1,024 red, then 1,024 green, then 1,024 blue values, each plane a
 * row-major 32x32 image: already NCHW, so decoding is one copy per record.
 *
 * Every size is checked exactly: a file must hold the official number of records (or exactly
 * `expectedRecords`, an override for tests that generate small files), and every label must be in
 * range. Errors name the file and the fix.
 */
import { isDirectory, isFile } from "../io/paths.ts";
import { type Dataset, DatasetError, type Split } from "./dataset.ts";

export type CifarName = "cifar10" | "cifar100";

export const CIFAR10_CLASSES = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

/** CIFAR-100 fine label names, in label order (the official fine_label_names.txt). */
// deno-fmt-ignore
export const CIFAR100_CLASSES = [
  "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
  "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
  "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
  "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
  "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
  "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
  "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
  "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
  "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
  "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
];

export const CIFAR_PIXELS = 3 * 32 * 32;

export interface CifarFormat {
  title: string;
  /** The folder the official tarball extracts to. */
  folder: string;
  /** Data files per split, with their official record counts. */
  files: Record<Split, { name: string; records: number }[]>;
  /** Label bytes before the pixels of each record (CIFAR-100: coarse, fine). */
  labelBytes: number;
  /** Which label byte is the class (CIFAR-100: the fine label). */
  labelIndex: number;
  /** Upper bounds of each label byte. */
  labelRanges: number[];
  classes: string[];
  /** The official download. */
  url: string;
  md5: string;
}

export const CIFAR_FORMATS: Record<CifarName, CifarFormat> = {
  cifar10: {
    title: "CIFAR-10",
    folder: "cifar-10-batches-bin",
    files: {
      train: [1, 2, 3, 4, 5].map((k) => ({ name: `data_batch_${k}.bin`, records: 10000 })),
      test: [{ name: "test_batch.bin", records: 10000 }],
    },
    labelBytes: 1,
    labelIndex: 0,
    labelRanges: [10],
    classes: CIFAR10_CLASSES,
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5: "c32a1d4ab5d03f1284b67883e8d87530",
  },
  cifar100: {
    title: "CIFAR-100",
    folder: "cifar-100-binary",
    files: {
      train: [{ name: "train.bin", records: 50000 }],
      test: [{ name: "test.bin", records: 10000 }],
    },
    labelBytes: 2,
    labelIndex: 1,
    labelRanges: [20, 100],
    classes: CIFAR100_CLASSES,
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    md5: "03b5dce01913d631647c71ecec9e9cb8",
  },
};

export interface CifarOptions {
  /**
   * For tests only: every data file must hold exactly this many records instead of the official
   * count. The check stays exact (size = records x record size), it is not a lower bound.
   */
  expectedRecords?: number;
}

/** How to get the data, for error messages. */
export function cifarDownloadHint(which: CifarName, dir: string): string {
  const f = CIFAR_FORMATS[which];
  return `download it with \`deno task data ${which} --dir ${dir}\`, or fetch ${f.url} ` +
    `(md5 ${f.md5}) and extract it into ${dir} (it unpacks to ${dir}/${f.folder})`;
}

/**
 * The folder holding the data files: `dir` itself, or the `cifar-10-batches-bin/` /
 * `cifar-100-binary/` folder inside it that the official tarball extracts to.
 */
export async function resolveCifarDir(which: CifarName, dir: string): Promise<string> {
  const f = CIFAR_FORMATS[which];
  const probe = f.files.test[0].name;
  for (const candidate of [dir, `${dir}/${f.folder}`]) {
    if (await isFile(`${candidate}/${probe}`)) return candidate;
  }
  if (!(await isDirectory(dir))) {
    throw new DatasetError(`${f.title}: folder ${dir} does not exist: ${cifarDownloadHint(which, dir)}`);
  }
  if (await isDirectory(`${dir}/${f.folder}`)) return `${dir}/${f.folder}`; // files checked next
  return dir;
}

/**
 * Checks that an official data file is there with exactly `records` records (by its size, without
 * reading it); the error names the file and how to get a good copy.
 */
async function checkCifarFile(which: CifarName, dir: string, path: string, records: number): Promise<void> {
  const f = CIFAR_FORMATS[which];
  const recordBytes = f.labelBytes + CIFAR_PIXELS;
  const layout = `${f.labelBytes} label byte${f.labelBytes > 1 ? "s" : ""} + ${CIFAR_PIXELS} pixel bytes`;
  let size: number;
  try {
    size = (await Deno.stat(path)).size;
  } catch {
    throw new DatasetError(
      `${f.title}: missing file ${path}: ${cifarDownloadHint(which, dir)}`,
    );
  }
  if (size % recordBytes !== 0) {
    throw new DatasetError(
      `${f.title}: ${path} has ${size} bytes, not a multiple of the ${recordBytes}-byte record ` +
        `(${layout}): truncated or not a ${f.title} binary file; ${redownload(f)}`,
    );
  }
  if (size !== records * recordBytes) {
    throw new DatasetError(
      `${f.title}: ${path} holds ${size / recordBytes} records (${size} bytes), expected ${records} ` +
        `(${records * recordBytes} bytes): truncated or the wrong file; ${redownload(f)}`,
    );
  }
}

function redownload(f: CifarFormat): string {
  return `the file is corrupt: delete it and download again (${f.url})`;
}

/** The data files of a split in `folder`, with the record count each must hold. */
function splitFiles(which: CifarName, folder: string, split: Split, records?: number) {
  return CIFAR_FORMATS[which].files[split].map((file) => ({
    path: `${folder}/${file.name}`,
    records: records ?? file.records,
  }));
}

/**
 * Checks, without reading them, that both splits' files are in `dir` with their official sizes:
 * a long run checks its data before it starts rather than when a stage first loads it.
 */
export async function checkCifarFiles(
  which: CifarName,
  dir: string,
  options: CifarOptions = {},
): Promise<void> {
  const folder = await resolveCifarDir(which, dir);
  for (const split of ["train", "test"] as const) {
    for (const file of splitFiles(which, folder, split, options.expectedRecords)) {
      await checkCifarFile(which, dir, file.path, file.records);
    }
  }
}

/** Decodes one official data file into `images`/`labels` at record offset `at`. */
async function readCifarFile(
  which: CifarName,
  /** The folder the user named (the download hint's destination). */
  dir: string,
  path: string,
  records: number,
  images: Uint8Array,
  labels: Uint8Array,
  at: number,
): Promise<void> {
  const f = CIFAR_FORMATS[which];
  const recordBytes = f.labelBytes + CIFAR_PIXELS;
  await checkCifarFile(which, dir, path, records);
  const data = await Deno.readFile(path);
  for (let r = 0; r < records; r++) {
    const record = r * recordBytes;
    for (let b = 0; b < f.labelBytes; b++) {
      if (data[record + b] >= f.labelRanges[b]) {
        throw new DatasetError(
          `${f.title}: ${path} record ${r} has label byte ${b} = ${data[record + b]}, outside ` +
            `0..${f.labelRanges[b] - 1}: ${redownload(f)}`,
        );
      }
    }
    labels[at + r] = data[record + f.labelIndex];
    images.set(data.subarray(record + f.labelBytes, record + recordBytes), (at + r) * CIFAR_PIXELS);
  }
}

/** CIFAR-10 or CIFAR-100 (fine labels) from `dir`, shape [3, 32, 32]. */
export async function loadCifar(
  which: CifarName,
  dir: string,
  split: Split,
  options: CifarOptions = {},
): Promise<Dataset> {
  const f = CIFAR_FORMATS[which];
  if (!f) throw new DatasetError(`loadCifar: unknown dataset ${JSON.stringify(which)} (cifar10 or cifar100)`);
  if (split !== "train" && split !== "test") {
    throw new DatasetError(`loadCifar: split must be "train" or "test", got ${JSON.stringify(split)}`);
  }
  const override = options.expectedRecords;
  if (override !== undefined && !(Number.isInteger(override) && override > 0)) {
    throw new DatasetError(`loadCifar: expectedRecords must be a positive integer, got ${override}`);
  }
  const folder = await resolveCifarDir(which, dir);
  const files = splitFiles(which, folder, split, override);
  const n = files.reduce((sum, file) => sum + file.records, 0);
  const images = new Uint8Array(n * CIFAR_PIXELS);
  const labels = new Uint8Array(n);
  let at = 0;
  for (const file of files) {
    await readCifarFile(which, dir, file.path, file.records, images, labels, at);
    at += file.records;
  }
  return { name: `${which}/${split}`, images, labels, shape: [3, 32, 32], classes: f.classes };
}

/** CIFAR-10: 50,000 train / 10,000 test images of shape [3, 32, 32]. */
export function loadCifar10(dir: string, split: Split, options: CifarOptions = {}): Promise<Dataset> {
  return loadCifar("cifar10", dir, split, options);
}

/** CIFAR-100 with its 100 fine labels: 50,000 train / 10,000 test images of shape [3, 32, 32]. */
export function loadCifar100(dir: string, split: Split, options: CifarOptions = {}): Promise<Dataset> {
  return loadCifar("cifar100", dir, split, options);
}
