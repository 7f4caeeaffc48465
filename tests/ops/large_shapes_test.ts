/**
 * Large-shape guards. Mesa's llvmpipe (lavapipe, GL llvmpipe) silently ends every loop of an
 * invocation after 65,535 iterations in total (gallivm's LP_MAX_TGSI_LOOP_ITERATIONS): a kernel
 * that loops over a long reduction per invocation returns wrong numbers without any error. The
 * op tests use tiny shapes, so these tests run each long-reduction path past that limit and
 * compare sampled outputs with float64 sums.
 */
import assert from "node:assert/strict";
import { batchNorm2d } from "../../src/ops/batchnorm.ts";
import { conv2dBackwardFilter } from "../../src/ops/conv2d.ts";
import { fromArray, ones, zeros } from "../../src/ops/creation.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { linear, matmul } from "../../src/ops/matmul.ts";
import { sum } from "../../src/ops/reduce.ts";
import { assertClose, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

const LONG = 70_001; // > 65,535

gpuTest("large shapes: matmul with K past the loop limit", async () => {
  const rng = new Rng(1);
  const [m, k, n] = [3, LONG, 5];
  const a = Float32Array.from({ length: m * k }, () => rng.uniform());
  const b = Float32Array.from({ length: k * n }, () => rng.uniform());
  const c = await matmul(fromArray(a, [m, k]), fromArray(b, [k, n])).toArray();
  const ref = Array.from({ length: m * n }, (_, ij) => {
    let s = 0;
    for (let q = 0; q < k; q++) s += a[Math.floor(ij / n) * k + q] * b[q * n + (ij % n)];
    return s;
  });
  assertClose(c, ref, "matmul K=70001", { rtol: 1e-4, atol: 1e-3 });

  // Transposed operands and linear's fused bias take the same split-K path.
  const at = await matmul(fromArray(a, [k, m]), fromArray(b, [n, k]), { transposeA: true, transposeB: true })
    .toArray();
  const refT = Array.from({ length: m * n }, (_, ij) => {
    let s = 0;
    for (let q = 0; q < k; q++) s += a[q * m + Math.floor(ij / n)] * b[(ij % n) * k + q];
    return s;
  });
  assertClose(at, refT, "matmul Aᵀ·Bᵀ K=70001", { rtol: 1e-4, atol: 1e-3 });
  const bias = [1, 2, 3, 4, 5];
  const lin = await linear(fromArray(a, [m, k]), fromArray(b, [n, k]), fromArray(bias)).toArray();
  const refL = Array.from({ length: m * n }, (_, ij) => {
    let s = bias[ij % n];
    for (let q = 0; q < k; q++) s += a[Math.floor(ij / n) * k + q] * b[(ij % n) * k + q];
    return s;
  });
  assertClose(lin, refL, "linear in_features=70001", { rtol: 1e-4, atol: 1e-3 });
  // x of rank 3 ([..., in]) flattens to rows first.
  const lin3 = await linear(fromArray(a, [1, m, k]), fromArray(b, [n, k]), fromArray(bias)).toArray();
  assertClose(lin3, refL, "linear x [1, 3, 70001]", { rtol: 1e-4, atol: 1e-3 });
});

gpuTest(
  "large shapes: sums, batchnorm statistics and conv filter gradients over > 65,535 elements",
  async () => {
    const rng = new Rng(2);
    const total = await sum(ones([3 * LONG])).item();
    assertClose([total], [3 * LONG], "sum of ones");

    // Batchnorm over N·H·W = 72·32·32 = 73,728 positions per channel: with constant-per-channel
    // input the output must be exactly beta and the running mean must be the constant.
    const [n, c, h] = [72, 2, 32];
    const x = new Float32Array(n * c * h * h).map((_, i) => (Math.floor(i / (h * h)) % c) + 5);
    const gamma = ones([c]), beta = fromArray([0.5, -0.5]), mean = zeros([c]), variance = ones([c]);
    const y = batchNorm2d(fromArray(x, [n, c, h, h]), gamma, beta, mean, variance, {
      training: true,
      momentum: 1,
    });
    const yv = await y.toArray();
    assertClose([yv[0], yv[yv.length - 1]], [0.5, -0.5], "batchnorm output");
    assertClose(await mean.toArray(), [5, 6], "batchnorm running mean over 73,728 positions");

    // dW of a 1x1 conv = sum over all N·H·W positions of x·dy.
    const xs = Float32Array.from({ length: n * h * h }, () => rng.uniform());
    const dys = Float32Array.from({ length: n * h * h }, () => rng.uniform());
    const dw = await conv2dBackwardFilter(fromArray(xs, [n, 1, h, h]), fromArray(dys, [n, 1, h, h]), [
      1,
      1,
      1,
      1,
    ])
      .toArray();
    let ref = 0;
    for (let i = 0; i < xs.length; i++) ref += xs[i] * dys[i];
    assertClose(dw, [ref], "conv2d filter gradient over 73,728 positions", { rtol: 1e-4 });

    // Mean cross-entropy over > 65,535 rows of uniform logits is log(K).
    const ce = await crossEntropy(zeros([LONG, 3]), zeros([LONG], "i32")).item();
    assertClose([ce], [Math.log(3)], "cross-entropy mean over 70,001 rows");
  },
);

gpuTest(
  "large shapes: softmax rows past the CPU adapter's loop limit are refused, not miscomputed",
  (gpu) => {
    if (gpu.adapterClass !== "cpu") return;
    assert.throws(
      () => crossEntropy(zeros([1, 40_000]), zeros([1], "i32")),
      /crossEntropy: each row of logits \[1, 40000\] has 40000 elements; on CPU adapters \(llvmpipe\)/,
    );
  },
);
