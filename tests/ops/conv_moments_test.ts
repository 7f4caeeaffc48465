/**
 * conv2dWithMoments + batchnorm: the direct conv writes per-tile channel moments of its output,
 * and the training batchnorm merges them instead of reading the output for its statistics.
 * Checked against float64 statistics of the conv output itself, on shapes that split the packed
 * weights by input channels (only the last chunk's stores are final) and by output channels, with
 * strides, tiles past the edges, scalar and vec4 stores and a mean far from zero.
 */
import assert from "node:assert/strict";
import { gradScope } from "../../src/autograd/backward.ts";
import { batchNorm2dWithStats, batchNormTakesMoments, batchNormTuning } from "../../src/ops/batchnorm.ts";
import { conv2dWithMoments } from "../../src/ops/conv2d.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { manualSeed } from "../../src/ops/random.ts";
import { mul } from "../../src/ops/arithmetic.ts";
import { sum } from "../../src/ops/reduce.ts";
import { BatchNorm2d, Conv2d } from "../../src/nn/layers.ts";
import { assertClose, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

const tensorOf = (a: { shape: number[]; data: ArrayLike<number> }) =>
  fromArray(Float32Array.from(a.data), a.shape);

interface Case {
  x: [number, number, number, number];
  out: number;
  k: number;
  stride: number;
  padding: number;
  /** Added to every output channel (a bias): a mean far from zero. */
  offset: number;
}

const CASES: Case[] = [
  // Unaligned rows (scalar loads and stores), stride 2, tiles past the edges.
  { x: [3, 5, 7, 9], out: 12, k: 3, stride: 2, padding: 1, offset: 5 },
  // 130 input channels x 9 taps x 16 outputs > 64 KiB: two input-channel chunks.
  { x: [2, 130, 6, 6], out: 16, k: 3, stride: 1, padding: 1, offset: 0 },
  // 32 x 9 x 64 > 64 KiB: two output-channel chunks; mean ~100 against a spread of ~1.
  { x: [2, 32, 8, 8], out: 64, k: 3, stride: 1, padding: 1, offset: 100 },
  // Batch 1, wide 16x4 tiles with vec4 stores (the ResNet stem's shape).
  { x: [1, 3, 32, 32], out: 16, k: 3, stride: 1, padding: 1, offset: 0 },
  // 1x1 stride-2 projection, 8-channel tiles.
  { x: [4, 8, 10, 12], out: 8, k: 1, stride: 2, padding: 0, offset: -3 },
];

/** Float64 mean and biased variance of each channel of y [N, C, H, W]. */
function channelMoments(
  y: ArrayLike<number>,
  [n, c, h, w]: readonly number[],
): { mean: number[]; variance: number[] } {
  const plane = h * w, count = n * plane, mean: number[] = [], variance: number[] = [];
  for (let ch = 0; ch < c; ch++) {
    let s = 0;
    for (let b = 0; b < n; b++) for (let i = 0; i < plane; i++) s += y[(b * c + ch) * plane + i];
    const m = s / count;
    let sq = 0;
    for (let b = 0; b < n; b++) for (let i = 0; i < plane; i++) sq += (y[(b * c + ch) * plane + i] - m) ** 2;
    mean.push(m);
    variance.push(sq / count);
  }
  return { mean, variance };
}

gpuTest(
  "conv2dWithMoments: batchnorm statistics from the conv's moments match float64 ones of its output",
  async () => {
    batchNormTuning.variant = "cpu";
    try {
      const rng = new Rng(71);
      for (const cs of CASES) {
        const name = `conv ${JSON.stringify(cs)}`;
        const c = cs.out, momentum = 0.2, eps = 1e-5;
        assert.ok(batchNormTakesMoments(c), `${name}: the cpu batchnorm takes moments from 8 channels`);
        const x = tensorOf(rng.array(cs.x, -1, 1));
        const w = tensorOf(rng.array([c, cs.x[1], cs.k, cs.k], -0.3, 0.3));
        const bias = tensorOf({ shape: [c], data: Array.from({ length: c }, (_, i) => cs.offset + 0.1 * i) });
        const gamma = tensorOf(rng.array([c], 0.5, 1.5)), beta = tensorOf(rng.array([c], -0.5, 0.5));
        const rm0 = rng.array([c], -0.3, 0.3), rv0 = rng.array([c], 0.5, 2);
        const [rm, rv] = [tensorOf(rm0), tensorOf(rv0)];
        const options = { stride: cs.stride, padding: cs.padding, variant: "cpu" as const };
        const { y, moments } = conv2dWithMoments(x, w, bias, options);
        assert.ok(moments, `${name}: the direct conv returns moments`);
        assert.deepEqual(moments.partials.shape, [c, moments.parts, 4], `${name}: moments layout`);
        const { y: out, stats } = batchNorm2dWithStats(y, gamma, beta, rm, rv, {
          training: true,
          momentum,
          eps,
          relu: true,
          moments,
        });

        const yv = await y.toArray();
        const [n, , h, wd] = y.shape, count = n * h * wd;
        const { mean, variance } = channelMoments(yv, y.shape);
        // The parts' counts must cover every output value exactly once.
        const parts = await moments.partials.toArray();
        for (let ch = 0; ch < c; ch++) {
          let total = 0;
          for (let j = 0; j < moments.parts; j++) total += parts[(ch * moments.parts + j) * 4];
          assert.equal(total, count, `${name}: channel ${ch} moments count`);
        }
        const invstd = variance.map((v) => 1 / Math.sqrt(v + eps));
        const s = await stats.toArray();
        // Means are compared relative to the spread (~1), not to |mean| (~100).
        assertClose(s.filter((_, i) => i % 2 === 0), mean, `${name}: batch mean`, { rtol: 1e-5, atol: 2e-5 });
        assertClose(s.filter((_, i) => i % 2 === 1), invstd, `${name}: batch 1/std`, {
          rtol: 1e-4,
          atol: 1e-5,
        });
        const runMean = mean.map((m, i) => (1 - momentum) * rm0.data[i] + momentum * m);
        const runVar = variance.map((v, i) =>
          (1 - momentum) * rv0.data[i] + momentum * v * count / (count - 1)
        );
        assertClose(await rm.toArray(), runMean, `${name}: running mean`, { rtol: 1e-5, atol: 2e-5 });
        assertClose(await rv.toArray(), runVar, `${name}: running var`, { rtol: 1e-4, atol: 1e-5 });
        // The normalised output, from the float64 statistics of y.
        const g = await gamma.toArray(), b = await beta.toArray();
        const plane = h * wd;
        const expected = Array.from(yv, (v, i) => {
          const ch = Math.floor(i / plane) % c;
          return Math.max(0, g[ch] * (v - mean[ch]) * invstd[ch] + b[ch]);
        });
        assertClose(await out.toArray(), expected, `${name}: normalised output`, { rtol: 1e-4, atol: 1e-4 });
        [x, w, bias, gamma, beta, rm, rv, y, out, stats, moments.partials].forEach((t) => t.dispose());
      }
    } finally {
      batchNormTuning.variant = null;
    }
  },
);

gpuTest("BatchNorm2d.ofConv: same output, running statistics and gradients as bn(conv(x))", async () => {
  batchNormTuning.variant = "cpu";
  try {
    const rng = new Rng(72);
    for (const [shape, out, stride] of [[[2, 6, 9, 8], 16, 2], [[3, 4, 8, 8], 8, 1]] as const) {
      const name = `ofConv ${JSON.stringify(shape)} -> ${out} stride ${stride}`;
      const x = tensorOf(rng.array([...shape], -1, 1));
      const residual = rng.array(
        [shape[0], out, Math.ceil(shape[2] / stride), Math.ceil(shape[3] / stride)],
        -1,
        1,
      );
      const r = tensorOf(residual);
      const upstream = tensorOf(rng.array(residual.shape, -1, 1));
      const run = async (fused: boolean) => {
        manualSeed(9); // the same initial weights in both runs
        const conv = new Conv2d(shape[1], out, 3, { stride, padding: 1, bias: false });
        const bn = new BatchNorm2d(out);
        const y = gradScope(() => {
          const y = fused
            ? bn.ofConv(conv, x, { relu: true, residual: r })
            : bn.forwardAddRelu(conv.forward(x), r);
          sum(mul(y, upstream)).backward();
          return y;
        });
        const result = {
          y: await y.toArray(),
          runningVar: await bn.runningVar.toArray(),
          dw: await conv.weight.grad!.toArray(),
          dgamma: await bn.weight.grad!.toArray(),
        };
        y.dispose();
        conv.dispose();
        bn.dispose();
        return result;
      };
      const plain = await run(false), fused = await run(true);
      for (const key of ["y", "runningVar", "dw", "dgamma"] as const) {
        assertClose(fused[key], plain[key], `${name}: ${key}`, { rtol: 1e-4, atol: 1e-4 });
      }
      [x, r, upstream].forEach((t) => t.dispose());
    }
  } finally {
    batchNormTuning.variant = null;
  }
});
