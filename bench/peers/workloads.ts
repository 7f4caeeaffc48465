/**
 * The benchmark workloads shared by our engine and the peers (tfjs, maybe PyTorch): row names and
 * work per iteration, defined once so that rows of different implementations pair up by `name`
 * and their rates are computed from the same work counts (a rate ratio is then a time ratio).
 */

/** Conv/batchnorm benchmark shape: batch 64, 64 -> 64 channels, 32x32 pixels, 3x3 kernel, pad 1. */
export const CONV = { batch: 64, channels: 64, size: 32, kernel: 3 } as const;

/** Elements of the [64, 64, 32, 32] activation. */
const ACT = CONV.batch * CONV.channels * CONV.size * CONV.size;

/** Multiply-adds of the 3x3 conv are 2 FLOP each; forward, backward-data and backward-filter alike. */
const CONV_FLOP = 2 * ACT * CONV.channels * CONV.kernel * CONV.kernel;

export const WORK = {
  matmul512: { name: "matmul 512", flop: 2 * 512 ** 3 },
  matmul1024: { name: "matmul 1024", flop: 2 * 1024 ** 3 },
  convForward: { name: "conv2d forward 64x64x32x32 3x3", flop: CONV_FLOP },
  convBackwardData: { name: "conv2d backward-data 64x64x32x32 3x3", flop: CONV_FLOP },
  convBackwardFilter: { name: "conv2d backward-filter 64x64x32x32 3x3", flop: CONV_FLOP },
  /**
   * Training-mode batchnorm, counted as the minimum traffic of a fused two-pass kernel (float32):
   * read x for the per-channel mean/variance, then read x and write y = 3 tensors. The per-channel
   * vectors (64 floats) are negligible and not counted.
   */
  batchnormForward: { name: "batchnorm forward 64x64x32x32", bytes: 3 * ACT * 4 },
  /**
   * Backward given dy: read x and dy for the per-channel sums (dbeta = sum dy, dgamma = sum dy*xhat),
   * then read x and dy again and write dx = 5 tensors.
   */
  batchnormBackward: { name: "batchnorm backward 64x64x32x32", bytes: 5 * ACT * 4 },
  /** One SGD-momentum step of ResNet-8 on a batch of 64 CIFAR-sized images; rate is images/s. */
  resnet8Step: { name: "resnet8 train step b64", items: 64 },
} as const;
