/** The data of a training stage: both splits on the GPU and a seeded, shuffled train loader. */
import { type DatasetName, DATASETS, loadDataset } from "../data/by_name.ts";
import { type AugmentOptions, DataLoader, GpuDataset } from "../data/loader.ts";

export interface StageDataOptions {
  dataset: string;
  dataDir: string;
  batchSize: number;
  seed: number;
  /** Class-balanced subset of the training split. */
  limit: number | null;
  /** With `limit`: the same subset every epoch (default) or a fresh random one (LoaderOptions). */
  limitSubset?: "fixed" | "fresh";
  /** "auto": the dataset's usual augmentation (crop+flip for CIFAR, none for the MNISTs). */
  augment: "auto" | "none" | "crop-flip";
}

export interface StageData {
  train: GpuDataset;
  test: GpuDataset;
  loader: DataLoader;
  /** [C, H, W]. */
  shape: [number, number, number];
  classes: string[];
  dispose(): void;
}

export function augmentation(dataset: string, augment: StageDataOptions["augment"]): AugmentOptions {
  if (augment === "auto") return DATASETS[dataset as DatasetName]?.augment ?? {};
  return augment === "crop-flip" ? { crop: { padding: 4 }, flip: true } : {};
}

export async function openStageData(options: StageDataOptions): Promise<StageData> {
  const [trainHost, testHost] = await Promise.all([
    loadDataset(options.dataset, "train", options.dataDir),
    loadDataset(options.dataset, "test", options.dataDir),
  ]);
  const train = GpuDataset.upload(trainHost), test = GpuDataset.upload(testHost);
  const loader = new DataLoader(train, {
    batchSize: options.batchSize,
    shuffle: true,
    seed: options.seed,
    limit: options.limit ?? undefined,
    limitSubset: options.limitSubset,
    augment: augmentation(options.dataset, options.augment),
  });
  return {
    train,
    test,
    loader,
    shape: [...trainHost.shape] as [number, number, number],
    classes: trainHost.classes,
    dispose() {
      loader.dispose();
      train.dispose();
      test.dispose();
    },
  };
}
