import assert from "node:assert/strict";
import { gradScope } from "../../src/autograd/backward.ts";
import { batchNorm2d, batchNorm2dWithStats, batchNormTuning } from "../../src/ops/batchnorm.ts";
import { fromArray, ones, zeros } from "../../src/ops/creation.ts";
import { mul } from "../../src/ops/arithmetic.ts";
import { sum } from "../../src/ops/reduce.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { checkOp } from "../helpers/check_op.ts";
import { assertClose, f32Round, type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";
import type { BatchNormVariant } from "../../shaders/batchnorm.ts";

interface RefOptions {
  training: boolean;
  momentum?: number;
  eps?: number;
  relu?: boolean;
  /** Added before the ReLU: relu(bn(x) + residual). */
  residual?: Nd;
}

interface RefStats {
  mean: number[];
  invstd: number[];
  /** Running statistics after the forward (updated in training). */
  runMean: number[];
  runVar: number[];
}

/** Float64 batch norm: the statistics it normalises with, and the running-stat update. */
function refStats(x: Nd, rm: Nd, rv: Nd, o: RefOptions): RefStats {
  const [n, c, h, w] = x.shape, plane = h * w, count = n * plane;
  const { momentum = 0.1, eps = 1e-5 } = o;
  const mean: number[] = [], invstd: number[] = [], runMean = [...rm.data], runVar = [...rv.data];
  for (let ch = 0; ch < c; ch++) {
    if (!o.training) {
      mean.push(rm.data[ch]);
      invstd.push(1 / Math.sqrt(rv.data[ch] + eps));
      continue;
    }
    let s = 0;
    for (let b = 0; b < n; b++) for (let i = 0; i < plane; i++) s += x.data[(b * c + ch) * plane + i];
    const m = s / count;
    let sq = 0;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < plane; i++) sq += (x.data[(b * c + ch) * plane + i] - m) ** 2;
    }
    const variance = sq / count;
    mean.push(m);
    invstd.push(1 / Math.sqrt(variance + eps));
    runMean[ch] = (1 - momentum) * rm.data[ch] + momentum * m;
    const unbiased = count > 1 ? sq / (count - 1) : variance;
    runVar[ch] = (1 - momentum) * rv.data[ch] + momentum * unbiased;
  }
  return { mean, invstd, runMean, runVar };
}

/** Visits every element as (flat index, channel). */
function forEachElement(x: Nd, f: (i: number, ch: number) => void): void {
  const [n, c, h, w] = x.shape, plane = h * w;
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < c; ch++) {
      for (let i = 0; i < plane; i++) f((b * c + ch) * plane + i, ch);
    }
  }
}

function refForward(x: Nd, g: Nd, b: Nd, rm: Nd, rv: Nd, o: RefOptions): Nd {
  const s = refStats(x, rm, rv, o);
  const y = nd(x.shape);
  forEachElement(x, (i, ch) => {
    const v = (x.data[i] - s.mean[ch]) * s.invstd[ch] * g.data[ch] + b.data[ch] + (o.residual?.data[i] ?? 0);
    y.data[i] = o.relu ? Math.max(v, 0) : v;
  });
  return y;
}

/** Float64 backward: [dx, dgamma, dbeta] (and d residual when there is one). */
function refBackward(dy: Nd, x: Nd, g: Nd, b: Nd, rm: Nd, rv: Nd, o: RefOptions): Nd[] {
  const c = x.shape[1], count = x.data.length / c;
  const s = refStats(x, rm, rv, o);
  const xhat = nd(x.shape), gy = nd(x.shape);
  const dgamma = nd([c]), dbeta = nd([c]);
  forEachElement(x, (i, ch) => {
    xhat.data[i] = (x.data[i] - s.mean[ch]) * s.invstd[ch];
    const y = xhat.data[i] * g.data[ch] + b.data[ch] + (o.residual?.data[i] ?? 0);
    gy.data[i] = o.relu && !(y > 0) ? 0 : dy.data[i];
    dbeta.data[ch] += gy.data[i];
    dgamma.data[ch] += gy.data[i] * xhat.data[i];
  });
  const dx = nd(x.shape);
  forEachElement(x, (i, ch) => {
    const k = g.data[ch] * s.invstd[ch];
    dx.data[i] = o.training
      ? k * (gy.data[i] - dbeta.data[ch] / count - xhat.data[i] * dgamma.data[ch] / count)
      : k * gy.data[i];
  });
  return o.residual ? [dx, dgamma, dbeta, gy] : [dx, dgamma, dbeta];
}

const VARIANTS: BatchNormVariant[] = ["cpu", "gpu"];

async function withVariant(v: BatchNormVariant, fn: () => Promise<void>): Promise<void> {
  batchNormTuning.variant = v;
  try {
    await fn();
  } finally {
    batchNormTuning.variant = null;
  }
}

/** Random parameters and running statistics for C channels. */
function channelParams(rng: Rng, c: number): { gamma: Nd; beta: Nd; rm: Nd; rv: Nd } {
  return {
    gamma: rng.array([c], 0.5, 1.5),
    beta: rng.array([c], -0.5, 0.5),
    rm: rng.array([c], -0.3, 0.3),
    rv: rng.array([c], 0.5, 2),
  };
}

// Plane sizes: not multiples of 4 (scalar path), multiples of 4 (vec4 path), 1x1; channel
// counts that are not tile multiples; a case with several partial sums per channel. From 8
// channels the cpu reduction finishes each channel in one workgroup (aligned runs, unaligned
// runs, and runs the 64 lanes take more than once in the last shape).
const SHAPES: number[][] = [
  [2, 9, 4, 4],
  [3, 8, 5, 3],
  [72, 8, 4, 4],
  [2, 3, 5, 7],
  [2, 3, 7, 7], // runs of 7 units (the streaming passes on CPU adapters)
  [3, 5, 4, 4],
  [2, 1, 1, 1], // N·H·W = 2, the fewest values training accepts
  [2, 7, 1, 1],
  [2, 6, 3, 3],
  [1, 2, 2, 2],
  [2, 3, 4, 8],
  [3, 2, 2, 3],
  [1, 3, 2, 4],
  [2, 2, 64, 66],
];

for (const v of VARIANTS) {
  gpuTest(`batchNorm2d (${v} reduction): training forward, saved stats and running stats`, async () => {
    await withVariant(v, async () => {
      const rng = new Rng(11);
      for (const shape of [...SHAPES, [4, 3, 6, 6]]) {
        const c = shape[1];
        // Offset the data so that |mean| >> std somewhere: checks the shifted variance sums.
        const x = f32Round(rng.array(shape, 30, 31.5));
        const { gamma, beta, rm, rv } = channelParams(rng, c);
        const o = { training: true, momentum: 0.3, eps: 1e-5 };
        const s = refStats(x, rm, rv, o);
        const [xT, gT, bT, rmT, rvT] = [x, gamma, beta, rm, rv].map((a) =>
          fromArray(Float32Array.from(a.data), a.shape)
        );
        const { y, stats } = batchNorm2dWithStats(xT, gT, bT, rmT, rvT, o);
        const what = `batchNorm2d ${JSON.stringify(shape)}`;
        const tol = { rtol: 1e-4, atol: 1e-4 };
        assertClose(await y.toArray(), refForward(x, gamma, beta, rm, rv, o).data, `${what}: y`, tol);
        const expectedStats = s.mean.flatMap((m, ch) => [m, s.invstd[ch]]);
        // invstd can be 1/sqrt(eps) ~ 316 (zero variance): relative tolerance.
        assertClose(await stats.toArray(), expectedStats, `${what}: saved (mean, invstd)`, {
          rtol: 2e-3,
          atol: 1e-4,
        });
        assertClose(await rmT.toArray(), s.runMean, `${what}: running mean`, tol);
        assertClose(await rvT.toArray(), s.runVar, `${what}: running var`, tol);
        for (const t of [xT, gT, bT, rmT, rvT, y, stats]) t.dispose();
      }
    });
  });

  gpuTest(`batchNorm2d (${v} reduction): gradients in training mode, with and without ReLU`, async () => {
    await withVariant(v, async () => {
      const rng = new Rng(21);
      for (const shape of SHAPES) {
        // Finite differences of gamma move every y of a channel; with thousands of them some
        // cross the ReLU kink, so the fused ReLU is checked on the smaller shapes.
        for (const relu of shape.reduce((a, b) => a * b) > 2000 ? [false] : [false, true]) {
          const c = shape[1];
          const { gamma, beta } = channelParams(rng, c);
          const o = { training: true, relu };
          // M = N·H·W = 2: x̂ = ±1, the smallest case; looser absolute tolerance.
          const tiny = shape[0] * shape[2] * shape[3] === 2;
          await checkOp({
            name: `batchNorm2d training relu=${relu} ${JSON.stringify(shape)}`,
            inputs: [rng.array(shape, -2, 2), gamma, beta],
            // Fresh running statistics on every call: their update must not leak between calls.
            gpu: (x, g, b) => batchNorm2d(x, g, b, zeros([c]), ones([c]), o),
            ref: (x, g, b) => refForward(x, g, b, nd([c]), nd([c], new Array(c).fill(1)), o),
            refGrad: (dy, x, g, b) => refBackward(dy, x, g, b, nd([c]), nd([c]), o),
            tol: { rtol: 1e-4, atol: 2e-4 },
            gradTol: { rtol: 1e-3, atol: tiny ? 1e-3 : 5e-4 },
            fdSamples: 8,
          });
        }
      }
    });
  });

  gpuTest(`batchNorm2d (${v} reduction): eval forward and gradients`, async () => {
    await withVariant(v, async () => {
      const rng = new Rng(31);
      for (const shape of SHAPES) {
        for (const relu of [false, true]) {
          const c = shape[1];
          const { gamma, beta, rm, rv } = channelParams(rng, c);
          const o = { training: false, relu };
          const [rmT, rvT] = [rm, rv].map((a) => fromArray(Float32Array.from(a.data), a.shape));
          const base = {
            inputs: [rng.array(shape, -2, 2), gamma, beta],
            gpu: (x: Tensor, g: Tensor, b: Tensor) => batchNorm2d(x, g, b, rmT, rvT, o),
            ref: (x: Nd, g: Nd, b: Nd) => refForward(x, g, b, f32Round(rm), f32Round(rv), o),
            refGrad: (dy: Nd, x: Nd, g: Nd, b: Nd) => refBackward(dy, x, g, b, f32Round(rm), f32Round(rv), o),
            tol: { rtol: 1e-4, atol: 1e-4 },
            gradTol: { rtol: 1e-3, atol: 5e-4 },
            fdSamples: 8,
            // Small steps, so that no y crosses the ReLU kink when gamma moves a whole channel (y
            // moves ~1e-6), yet not so small that rounding in the float64 loss sum (~1e-16·|L|/eps)
            // reaches the check's 1e-6 tolerance on the largest shape.
            eps: 1e-6,
          };
          const name = `batchNorm2d eval relu=${relu} ${JSON.stringify(shape)}`;
          await checkOp({ ...base, name });
          // Only dx (attacks): the parameter-gradient pass is skipped.
          await checkOp({ ...base, name: `${name} (dx only)`, gradInputs: [0] });
          // Eval must not touch the running statistics.
          assertClose(await rmT.toArray(), f32Round(rm).data, `${name}: running mean unchanged`, { atol: 0 });
          assertClose(await rvT.toArray(), f32Round(rv).data, `${name}: running var unchanged`, { atol: 0 });
          rmT.dispose();
          rvT.dispose();
        }
      }
    });
  });
  gpuTest(`batchNorm2d (${v} reduction): residual join relu(bn(x) + r), training and eval`, async () => {
    await withVariant(v, async () => {
      const rng = new Rng(51);
      // One dispatch per direction from 8 channels on the cpu variant (aligned and unaligned
      // runs), separate passes below.
      for (const shape of [[2, 9, 4, 4], [3, 8, 5, 3], [2, 3, 5, 7], [1, 4, 2, 4]]) {
        for (const training of [true, false]) {
          for (const relu of [true, false]) {
            const c = shape[1];
            const { gamma, beta, rm, rv } = channelParams(rng, c);
            const [rmT, rvT] = [rm, rv].map((a) => fromArray(Float32Array.from(a.data), a.shape));
            const stats = training ? [nd([c]), nd([c], new Array(c).fill(1))] : [f32Round(rm), f32Round(rv)];
            const o = { training, relu };
            const base = {
              inputs: [rng.array(shape, -2, 2), gamma, beta, rng.array(shape, -1, 1)],
              gpu: (x: Tensor, g: Tensor, b: Tensor, r: Tensor) =>
                training
                  ? batchNorm2d(x, g, b, zeros([c]), ones([c]), { ...o, residual: r })
                  : batchNorm2d(x, g, b, rmT, rvT, { ...o, residual: r }),
              ref: (x: Nd, g: Nd, b: Nd, r: Nd) =>
                refForward(x, g, b, stats[0], stats[1], { ...o, residual: r }),
              refGrad: (dy: Nd, x: Nd, g: Nd, b: Nd, r: Nd) =>
                refBackward(dy, x, g, b, stats[0], stats[1], { ...o, residual: r }),
              tol: { rtol: 1e-4, atol: 2e-4 },
              gradTol: { rtol: 1e-3, atol: 5e-4 },
              fdSamples: 8,
              eps: training ? undefined : 1e-8,
            };
            const name = `batchNorm2d residual training=${training} relu=${relu} ${JSON.stringify(shape)}`;
            await checkOp({ ...base, name });
            // dx alone: the fused cpu backward masks by the output without writing the
            // residual's gradient.
            await checkOp({ ...base, name: `${name} (dx only)`, gradInputs: [0] });
            rmT.dispose();
            rvT.dispose();
          }
        }
      }
    });
  });
}

gpuTest("batchNorm2d: a channel too large for one partial per 32 units (longer runs)", async () => {
  const rng = new Rng(41);
  const shape = [1, 1, 1024, 520]; // 133,120 vec4 units in the channel: runs of 33
  const x = f32Round(rng.array(shape, -3, 5));
  const { gamma, beta, rm, rv } = channelParams(rng, 1);
  const o = { training: true };
  for (const v of VARIANTS) {
    await withVariant(v, async () => {
      const [xT, gT, bT, rmT, rvT] = [x, gamma, beta, rm, rv].map((a) =>
        fromArray(Float32Array.from(a.data), a.shape)
      );
      const y = batchNorm2d(xT, gT, bT, rmT, rvT, o);
      assertClose(await y.toArray(), refForward(x, gamma, beta, rm, rv, o).data, `${v}: y`, { atol: 2e-4 });
      assertClose(await rvT.toArray(), refStats(x, rm, rv, o).runVar, `${v}: running var`);
      for (const t of [xT, gT, bT, rmT, rvT, y]) t.dispose();
    });
  }
});

gpuTest("batchNorm2d: zero variance (constant channels) stays finite", async () => {
  const x = fromArray([3, -2, 5, 3, -2, 5], [2, 3, 1, 1]);
  const xConst = fromArray(new Array(2 * 3 * 5 * 5).fill(7), [2, 3, 5, 5]);
  for (const input of [x, xConst]) {
    const c = input.shape[1];
    const beta = fromArray(Array.from({ length: c }, (_, i) => i * 0.5), [c]);
    const gamma = ones([c]), rm = zeros([c]), rv = ones([c]);
    const y = batchNorm2d(input, gamma, beta, rm, rv, { training: true });
    const values = await y.toArray();
    assert.ok(values.every(Number.isFinite), `y is finite: ${values}`);
    // x̂ = 0 exactly, so y = beta.
    const expected = Array.from(
      values,
      (_, i) => (Math.floor(i / (input.size / input.shape[0] / c)) % c) * 0.5,
    );
    assertClose(values, expected, "zero-variance y = beta");
    assert.ok((await rv.toArray()).every(Number.isFinite), "running var is finite");
    for (const t of [gamma, beta, rm, rv, y]) t.dispose();
  }
  x.dispose();
  xConst.dispose();
});

gpuTest("batchNorm2d: parameter gradients through gradScope and backward()", async () => {
  const rng = new Rng(5);
  const shape = [2, 3, 4, 5], c = 3;
  const x = rng.array(shape);
  const { gamma, beta } = channelParams(rng, c);
  const w = rng.array(shape);
  const [xT, gT, bT, wT] = [x, gamma, beta, w].map((a) => fromArray(Float32Array.from(a.data), a.shape));
  gT.requiresGrad = bT.requiresGrad = true;
  const rm = zeros([c]), rv = ones([c]);
  gradScope(() => {
    // x needs no gradient here: the data-gradient pass is skipped.
    const y = batchNorm2d(xT, gT, bT, rm, rv, { training: true });
    sum(mul(y, wT)).backward();
  });
  const o = { training: true };
  const [, dgamma, dbeta] = refBackward(w, x, gamma, beta, nd([c]), nd([c]), o);
  assertClose(await gT.grad!.toArray(), dgamma.data, "gamma.grad", { atol: 1e-4 });
  assertClose(await bT.grad!.toArray(), dbeta.data, "beta.grad", { atol: 1e-4 });
  for (const t of [xT, gT, bT, wT, rm, rv, gT.grad!, bT.grad!]) t.dispose();
});

gpuTest("batchNorm2d: a NaN in a channel makes that channel NaN, through the fused ReLU too", async () => {
  const cases: [number[], boolean][] = [[[2, 2, 2, 4], true], [[2, 2, 2, 4], false], [[1, 2, 3, 3], true]];
  for (const [shape, relu] of cases) {
    const n = shape.reduce((a, b) => a * b), plane = shape[2] * shape[3];
    const data = Float32Array.from({ length: n }, (_, i) => (i % 7) - 3);
    data[1] = NaN; // channel 0 of image 0
    const x = fromArray(data, shape);
    const [gamma, beta, rm, rv] = [ones([2]), zeros([2]), zeros([2]), ones([2])];
    const y = await batchNorm2d(x, gamma, beta, rm, rv, { training: true, relu }).toArray();
    for (let i = 0; i < n; i++) {
      const channel = Math.floor(i / plane) % 2;
      assert.equal(
        Number.isNaN(y[i]),
        channel === 0,
        `${JSON.stringify(shape)} relu ${relu}: y[${i}] = ${y[i]}`,
      );
    }
    [x, gamma, beta, rm, rv].forEach((t) => t.dispose());
  }
});

gpuTest("batchNorm2d: errors name the op and the shapes", () => {
  const x = zeros([2, 3, 4, 4]);
  const c3 = zeros([3]), c4 = zeros([4]), v3 = ones([3]);
  const rank3 = zeros([3, 4, 4]);
  assert.throws(
    () => batchNorm2d(rank3, c3, c3, c3, v3, { training: true }),
    /batchNorm2d: expects x of shape \[N, C, H, W\], got \[3, 4, 4\]/,
  );
  assert.throws(
    () => batchNorm2d(x, c4, c3, c3, v3, { training: true }),
    /batchNorm2d: gamma must have shape \[3\].*\[2, 3, 4, 4\].*got \[4\]/,
  );
  assert.throws(
    () => batchNorm2d(x, c3, c3, c3, c4, { training: false }),
    /batchNorm2d: runningVar must have shape \[3\]/,
  );
  assert.throws(
    () => batchNorm2d(x, c3, c3, c3, v3, { training: true, momentum: 1.5 }),
    /batchNorm2d: momentum 1.5/,
  );
  assert.throws(
    () => batchNorm2d(x, c3, c3, c3, c3, { training: true }),
    /batchNorm2d: runningMean and runningVar must be different tensors/,
  );
  assert.throws(
    () => batchNorm2d(x, c3, c3, c3, v3, { training: true, relu: true, residual: zeros([2, 3, 4, 5]) }),
    /batchNorm2d: residual \[2, 3, 4, 5\] must have the shape of x \[2, 3, 4, 4\]/,
  );
  for (const shape of [[0, 3, 4, 4], [1, 3, 1, 1]]) {
    assert.throws(
      () => batchNorm2d(zeros(shape), c3, c3, c3, v3, { training: true }),
      /batchNorm2d: training needs more than one value per channel \(N·H·W > 1\), got x \[/,
    );
  }
  for (const t of [x, c3, c4, v3, rank3]) t.dispose();
});
