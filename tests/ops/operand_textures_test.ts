/**
 * Kernels that read their operands through operand textures (src/device/operand_textures.ts)
 * give the same bits as their storage-buffer form (the same arithmetic in the same order). The
 * float64 reference tests of these ops run with textures on (the default), so this also checks
 * the storage form against the reference. The texture copy itself: tests/smoke/.
 */
import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { conv2d, conv2dBackwardData, conv2dBackwardFilter } from "../../src/ops/conv2d.ts";
import { batchNorm2d, batchNormTuning } from "../../src/ops/batchnorm.ts";
import { gatedActivation } from "../../src/ops/gated_activation.ts";
import { batchMatmul, linear, matmul, matmulTunables } from "../../src/ops/matmul.ts";
import { fromArray, ones, zeros } from "../../src/ops/creation.ts";
import { mul } from "../../src/ops/arithmetic.ts";
import { mapElements } from "../../src/ops/elementwise.ts";
import { avgPool2d, globalAvgPool2d, maxPool2d, upsampleNearest2d } from "../../src/ops/pool.ts";
import { TEXTURE_MIN_ELEMENTS } from "../../src/ops/kernel.ts";
import { sum } from "../../src/ops/reduce.ts";
import type { Gpu } from "../../src/device/gpu.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { cfg, type Config, options, outSize } from "../helpers/conv_reference.ts";
import { Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

/**
 * Runs `fn` with the tunable `textureOperands` set to `on` and the batchnorm and matmul kernels
 * forced to their cpu variants (the ones that read textures; conv tests name theirs), returning
 * the arrays it reads. Checks that textures were used exactly when `on` (and `expected`: ops that
 * follow the adapter class use them on CPU adapters only).
 */
async function withTextures(
  gpu: Gpu,
  on: boolean,
  fn: () => Tensor[],
  expected = true,
): Promise<Float32Array[]> {
  const before = [gpu.tunables.textureOperands, batchNormTuning.variant, matmulTunables.variant] as const;
  gpu.tunables.textureOperands = on;
  batchNormTuning.variant = "cpu";
  matmulTunables.variant = "cpu";
  try {
    const acquired = gpu.operandTextures.acquired;
    const tensors = fn();
    assert.equal(gpu.operandTextures.acquired > acquired, on && expected, `operand textures used: ${on}`);
    const arrays = await Promise.all(tensors.map((t) => t.toArray() as Promise<Float32Array>));
    tensors.forEach((t) => t.dispose());
    return arrays;
  } finally {
    [gpu.tunables.textureOperands, batchNormTuning.variant, matmulTunables.variant] = before;
  }
}

const CONFIGS: Config[] = [
  // vec4 rows, both strides (phased data gradient), carried filter-gradient blocks.
  cfg({ batch: 2, inC: 5, outC: 17, h: 5, w: 16, kh: 3, kw: 3, padding: [1, 1] }),
  cfg({ batch: 2, inC: 3, outC: 8, h: 5, w: 16, kh: 3, kw: 3, padding: [1, 1], stride: [2, 2] }),
  // Short unrolled rows; scalar rows (width not a multiple of 4); a dilated 1-row map.
  cfg({ batch: 2, inC: 4, outC: 9, h: 6, w: 8, kh: 3, kw: 3, padding: [1, 1] }),
  cfg({ inC: 3, outC: 4, h: 7, w: 9, kh: 3, kw: 2, stride: [1, 2], padding: [2, 0], dilation: [1, 2] }),
  // Several uniform chunks of input channels (accumulating dispatches read one texture).
  cfg({ inC: 48, outC: 20, h: 5, w: 4, kh: 5, kw: 5, padding: [2, 2], bias: false }),
];

gpuTest("conv2d cpu: texture and storage operands give the same bits", async (gpu) => {
  let seed = 40;
  for (const c of CONFIGS) {
    const rng = new Rng(seed++);
    const x = fromArray(Float32Array.from(rng.array([c.batch, c.inC, c.h, c.w]).data), [
      c.batch,
      c.inC,
      c.h,
      c.w,
    ]);
    const w = fromArray(Float32Array.from(rng.array([c.outC, c.inC, c.kh, c.kw]).data), [
      c.outC,
      c.inC,
      c.kh,
      c.kw,
    ]);
    const dyShape = [c.batch, c.outC, ...outSize(c)];
    const dy = fromArray(Float32Array.from(rng.array(dyShape).data), dyShape);
    const o = options(c, "cpu");
    const run = () => [
      conv2d(x, w, undefined, o),
      conv2dBackwardData(dy, w, x.shape, o),
      conv2dBackwardFilter(x, dy, w.shape, o),
    ];
    const [texture, storage] = [await withTextures(gpu, true, run), await withTextures(gpu, false, run)];
    ["forward", "data gradient", "filter gradient"].forEach((what, i) => {
      assert.ok(texture[i].every(Number.isFinite), `${what} finite`);
      assert.deepEqual(texture[i], storage[i], `${what} of x[${x.shape}] w[${w.shape}]`);
    });
    [x, w, dy].forEach((t) => t.dispose());
  }
});

gpuTest("batchNorm2d cpu: texture and storage operands give the same bits", async (gpu) => {
  // Training with 8+ channels: the fused one-dispatch passes; with fewer: reduction, then the
  // streaming passes; eval: the streaming passes alone. vec4 units (H·W % 4 == 0) and scalar.
  const cases = [
    { shape: [2, 9, 4, 6], training: true },
    { shape: [3, 8, 3, 5], training: true },
    { shape: [2, 3, 4, 6], training: true },
    { shape: [2, 9, 4, 6], training: false },
    { shape: [3, 2, 3, 5], training: false },
  ];
  for (const { shape, training } of cases) {
    const rng = new Rng(shape[1] + shape[2]);
    const make = (s: number[]) => fromArray(Float32Array.from(rng.array(s).data), s);
    const x = make(shape), res = make(shape), r = make(shape);
    const gamma = make([shape[1]]), beta = make([shape[1]]);
    const run = () => {
      const runningMean = zeros([shape[1]]), runningVar = ones([shape[1]]);
      const { value, grads } = grad((x, gamma, beta, res) => {
        const y = batchNorm2d(x, gamma, beta, runningMean, runningVar, {
          training,
          relu: true,
          residual: res,
        });
        return sum(mul(y, r));
      }, [x, gamma, beta, res]);
      return [value, ...grads, runningMean, runningVar];
    };
    const [texture, storage] = [await withTextures(gpu, true, run), await withTextures(gpu, false, run)];
    texture.forEach((t, i) => {
      assert.ok(t.every(Number.isFinite), `output ${i} finite`);
      assert.deepEqual(t, storage[i], `output ${i} for x[${shape}], training ${training}`);
    });
    [x, res, r, gamma, beta].forEach((t) => t.dispose());
  }
});

gpuTest("gatedActivation: texture and storage operands give the same bits", async (gpu) => {
  for (const shape of [[2, 6, 4, 6], [1, 4, 3, 5]]) {
    const rng = new Rng(shape[3]);
    const y = fromArray(Float32Array.from(rng.array(shape).data), shape);
    const r = fromArray(Float32Array.from(rng.array([shape[0], shape[1] / 2, shape[2], shape[3]]).data), [
      shape[0],
      shape[1] / 2,
      shape[2],
      shape[3],
    ]);
    const run = () => {
      const { value, grads } = grad((y) => sum(mul(gatedActivation(y, shape[1] / 2), r)), [y]);
      return [value, ...grads];
    };
    // The gated activation reads textures on CPU adapters only (it has no variant option).
    const cpu = gpu.adapterClass === "cpu";
    const [texture, storage] = [await withTextures(gpu, true, run, cpu), await withTextures(gpu, false, run)];
    texture.forEach((t, i) => {
      assert.ok(t.every(Number.isFinite), `output ${i} finite`);
      assert.deepEqual(t, storage[i], `output ${i} for y[${shape}]`);
    });
    [y, r].forEach((t) => t.dispose());
  }
});

gpuTest("matmul cpu: texture and storage operands give the same bits", async (gpu) => {
  // [M, K, N]: 4-aligned (vec4 texels; the texture block's exact grid), ragged (r32float
  // texels, clamped edges), and each transpose; a batch; a linear layer's bias (B = W [N, K]).
  const cases: {
    m: number;
    k: number;
    n: number;
    tA?: boolean;
    tB?: boolean;
    batch?: number;
    bias?: boolean;
  }[] = [
    { m: 64, k: 32, n: 128 },
    { m: 13, k: 7, n: 21, tB: true, bias: true },
    { m: 20, k: 12, n: 36, tA: true },
    { m: 9, k: 16, n: 8, tB: true },
    { m: 12, k: 5, n: 17, tA: true, tB: true, batch: 3 },
  ];
  const rng = new Rng(77);
  for (const c of cases) {
    const lead = c.batch ? [c.batch] : [];
    const make = (s: number[]) => fromArray(Float32Array.from(rng.array(s).data), s);
    const a = make([...lead, ...(c.tA ? [c.k, c.m] : [c.m, c.k])]);
    const b = make([...lead, ...(c.tB ? [c.n, c.k] : [c.k, c.n])]);
    const bias = c.bias ? make([c.n]) : undefined;
    const run = () => [
      c.batch
        ? batchMatmul(a, b, { transposeA: c.tA, transposeB: c.tB })
        : bias
        ? linear(a, b, bias)
        : matmul(a, b, { transposeA: c.tA, transposeB: c.tB }),
    ];
    const [texture, storage] = [await withTextures(gpu, true, run), await withTextures(gpu, false, run)];
    assert.ok(texture[0].every(Number.isFinite), "finite");
    assert.deepEqual(texture[0], storage[0], JSON.stringify(c));
    [a, b, ...(bias ? [bias] : [])].forEach((t) => t.dispose());
  }
});

gpuTest("elementwise: texture and storage operands give the same bits", async (gpu) => {
  // Outputs of TEXTURE_MIN_ELEMENTS and more: same shapes (rank 1, vec4 texels), a per-channel
  // broadcast (an r32float texture beside rgba32float ones), rows not a multiple of 4 (scalar
  // texels), three inputs.
  const cases: { shapes: number[][]; expr: string }[] = [
    { shapes: [[2, 16, 32, 16], [2, 16, 32, 16]], expr: "a * b - a" },
    { shapes: [[2, 16, 32, 16], [1, 16, 1, 1]], expr: "(a - b) * 0.5" },
    { shapes: [[4, 8, 23, 23], [4, 1, 23, 23]], expr: "select(0.0, a, b > 0.0)" },
    { shapes: [[3, 8, 29, 25], [1, 8, 1, 1], [3, 8, 29, 25]], expr: "a * b + c" },
  ];
  assert.ok(cases.every((c) => c.shapes[0].reduce((p, d) => p * d) >= TEXTURE_MIN_ELEMENTS));
  const rng = new Rng(91);
  for (const { shapes, expr } of cases) {
    const inputs = shapes.map((s) => fromArray(Float32Array.from(rng.array(s).data), s));
    const run = () => [mapElements("test", expr, inputs)];
    // Elementwise ops read textures on CPU adapters only.
    const cpu = gpu.adapterClass === "cpu";
    const [texture, storage] = [await withTextures(gpu, true, run, cpu), await withTextures(gpu, false, run)];
    assert.ok(texture[0].every(Number.isFinite), "finite");
    assert.deepEqual(texture[0], storage[0], `${expr} over ${JSON.stringify(shapes)}`);
    inputs.forEach((t) => t.dispose());
  }
});

gpuTest("pooling and upsampling: texture and storage operands give the same bits", async (gpu) => {
  // Sizes past TEXTURE_MIN_ELEMENTS in both directions: overlapping max windows (the backward
  // gathers through the argmax), strided average windows, the global average, a ×2 upsample.
  const rng = new Rng(92);
  const x = fromArray(Float32Array.from(rng.array([4, 16, 36, 30]).data), [4, 16, 36, 30]);
  const u = fromArray(Float32Array.from(rng.array([2, 8, 32, 33]).data), [2, 8, 32, 33]);
  const cases: [string, (t: Tensor) => Tensor, Tensor][] = [
    ["maxPool2d 3x3 s1 p1", (t) => maxPool2d(t, 3, { stride: 1, padding: 1 }), x],
    ["avgPool2d 2x2", (t) => avgPool2d(t, 2), x],
    ["globalAvgPool2d", (t) => globalAvgPool2d(t), x],
    ["upsampleNearest2d", (t) => upsampleNearest2d(t), u],
  ];
  for (const [what, f, input] of cases) {
    const probe = f(input), shape = [...probe.shape];
    probe.dispose();
    const weights = fromArray(Float32Array.from(rng.array(shape).data), shape);
    const run = () => {
      const { value, grads } = grad((t) => sum(mul(f(t), weights)), [input]);
      return [f(input), value, ...grads];
    };
    const cpu = gpu.adapterClass === "cpu";
    const [texture, storage] = [await withTextures(gpu, true, run, cpu), await withTextures(gpu, false, run)];
    texture.forEach((t, i) => {
      assert.ok(t.every(Number.isFinite), `${what}: output ${i} finite`);
      assert.deepEqual(t, storage[i], `${what}: output ${i}`);
    });
    weights.dispose();
  }
  [x, u].forEach((t) => t.dispose());
});
