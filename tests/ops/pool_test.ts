import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { fromArray, zeros } from "../../src/ops/creation.ts";
import { avgPool2d, globalAvgPool2d, maxPool2d, upsampleNearest2d } from "../../src/ops/pool.ts";
import { checkOp } from "../helpers/check_op.ts";
import { assertClose, type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";
import { currentGpu } from "../../src/device/runtime.ts";

interface PoolArgs {
  kernel: number;
  stride: number;
  padding: number;
}

/** Float64 pooling; for max also the argmax (flat index into x) of every window. */
function poolRef(kind: "max" | "avg", x: Nd, a: PoolArgs): { y: Nd; argmax: number[] } {
  const [n, c, h, w] = x.shape;
  const oh = Math.floor((h + 2 * a.padding - a.kernel) / a.stride) + 1;
  const ow = Math.floor((w + 2 * a.padding - a.kernel) / a.stride) + 1;
  const y = nd([n, c, oh, ow]);
  const argmax: number[] = [];
  for (let plane = 0; plane < n * c; plane++) {
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        let best = -Infinity, bestAt = -1, acc = 0;
        for (let di = 0; di < a.kernel; di++) {
          for (let dj = 0; dj < a.kernel; dj++) {
            const r = i * a.stride - a.padding + di, s = j * a.stride - a.padding + dj;
            if (r < 0 || r >= h || s < 0 || s >= w) continue;
            const at = (plane * h + r) * w + s;
            acc += x.data[at];
            if (bestAt < 0 || x.data[at] > best) [best, bestAt] = [x.data[at], at];
          }
        }
        y.data[(plane * oh + i) * ow + j] = kind === "max" ? best : acc / (a.kernel * a.kernel);
        argmax.push(bestAt);
      }
    }
  }
  return { y, argmax };
}

function poolRefGrad(kind: "max" | "avg", dy: Nd, x: Nd, a: PoolArgs): Nd {
  const dx = nd(x.shape);
  if (kind === "max") {
    poolRef(kind, x, a).argmax.forEach((at, o) => (dx.data[at] += dy.data[o]));
    return dx;
  }
  // Avg: spread each window's dy / k² over its (unpadded) elements.
  const [, , h, w] = x.shape, [, , oh, ow] = dy.shape;
  for (let o = 0; o < dy.data.length; o++) {
    const j = o % ow, i = Math.floor(o / ow) % oh, plane = Math.floor(o / (ow * oh));
    for (let di = 0; di < a.kernel; di++) {
      for (let dj = 0; dj < a.kernel; dj++) {
        const r = i * a.stride - a.padding + di, s = j * a.stride - a.padding + dj;
        if (r < 0 || r >= h || s < 0 || s >= w) continue;
        dx.data[(plane * h + r) * w + s] += dy.data[o] / (a.kernel * a.kernel);
      }
    }
  }
  return dx;
}

const POOL_CASES: [number[], PoolArgs][] = [
  [[1, 1, 5, 5], { kernel: 2, stride: 2, padding: 0 }], // odd size: last row/column dropped
  [[2, 3, 7, 6], { kernel: 2, stride: 2, padding: 0 }],
  [[1, 2, 4, 4], { kernel: 2, stride: 2, padding: 0 }],
  [[2, 2, 2, 3], { kernel: 2, stride: 2, padding: 0 }], // a single window row
  [[1, 2, 5, 4], { kernel: 3, stride: 1, padding: 1 }], // overlapping, padded
  [[2, 1, 9, 8], { kernel: 3, stride: 2, padding: 1 }],
  [[1, 1, 6, 7], { kernel: 3, stride: 3, padding: 0 }],
  [[3, 5, 17, 19], { kernel: 2, stride: 2, padding: 0 }], // several workgroups
];

for (const kind of ["max", "avg"] as const) {
  const op = kind === "max" ? maxPool2d : avgPool2d;
  gpuTest(`${kind}Pool2d: forward and gradient (odd sizes, overlap, padding, batch 1)`, async () => {
    const rng = new Rng(kind === "max" ? 3 : 4);
    for (const [shape, a] of POOL_CASES) {
      await checkOp({
        name: `${kind}Pool2d ${JSON.stringify(shape)} ${JSON.stringify(a)}`,
        inputs: [rng.array(shape)],
        gpu: (x) => op(x, a.kernel, { stride: a.stride, padding: a.padding }),
        ref: (x) => poolRef(kind, x, a).y,
        refGrad: (dy, x) => [poolRefGrad(kind, dy, x, a)],
        // Steps far below the gap between distinct window values, so no argmax changes.
        eps: 1e-7,
      });
    }
  });
}

gpuTest("maxPool2d: ties send the gradient to the first maximum; -inf and all-equal windows", async () => {
  // One 4x4 plane, four 2x2 windows: ties (1 1 / 1 1 and 5 / 5 5), -inf, and 2 twice.
  // deno-fmt-ignore
  const x = fromArray([
    1, 1, 0, 5,
    1, 1, 5, 5,
    -Infinity, -Infinity, 2, 0,
    -Infinity, -Infinity, 0, 2,
  ], [1, 1, 4, 4]);
  const dy = fromArray([10, 20, 30, 40], [1, 1, 2, 2]);
  const { value, grads } = grad((t) => maxPool2d(t, 2), [x], dy);
  assert.deepEqual([...await value.toArray()], [1, 5, -Infinity, 2]);
  // Each window's dy lands on its first maximum in row-major order.
  // deno-fmt-ignore
  const expected = [
    10, 0, 0, 20,
    0, 0, 0, 0,
    30, 0, 40, 0,
    0, 0, 0, 0,
  ];
  assert.deepEqual([...await grads[0].toArray()], expected);
  for (const t of [x, dy, value, ...grads]) t.dispose();
});

gpuTest("globalAvgPool2d: forward and gradient", async () => {
  const rng = new Rng(8);
  // 257x263: planes past llvmpipe's 65,535-iteration loop limit (the chunked reduction on CPU adapters).
  for (const shape of [[1, 1, 1, 1], [2, 3, 5, 7], [1, 4, 4, 4], [3, 70, 2, 3], [1, 1, 257, 263]]) {
    const [n, c, h, w] = shape, plane = h * w;
    await checkOp({
      name: `globalAvgPool2d ${JSON.stringify(shape)}`,
      inputs: [rng.array(shape)],
      gpu: (x) => globalAvgPool2d(x),
      ref: (x) => {
        const y = nd([n, c]);
        for (let i = 0; i < x.data.length; i++) y.data[Math.floor(i / plane)] += x.data[i] / plane;
        return y;
      },
      refGrad: (dy, x) => [nd(x.shape, x.data.map((_, i) => dy.data[Math.floor(i / plane)] / plane))],
    });
  }
});

function upsampleRef(x: Nd, s: number): Nd {
  const [n, c, h, w] = x.shape;
  const y = nd([n, c, h * s, w * s]);
  for (let o = 0; o < y.data.length; o++) {
    const j = o % (w * s), i = Math.floor(o / (w * s)) % (h * s), plane = Math.floor(o / (w * s * h * s));
    y.data[o] = x.data[(plane * h + Math.floor(i / s)) * w + Math.floor(j / s)];
  }
  return y;
}

gpuTest("upsampleNearest2d: forward and gradient", async () => {
  const rng = new Rng(9);
  const cases: [number[], number][] = [
    [[1, 1, 3, 5], 2],
    [[2, 3, 4, 1], 2],
    [[1, 1, 1, 1], 2],
    [[2, 2, 3, 2], 3],
    [[1, 2, 5, 5], 1],
    [[2, 5, 9, 11], 2],
  ];
  for (const [shape, s] of cases) {
    await checkOp({
      name: `upsampleNearest2d ${JSON.stringify(shape)} x${s}`,
      inputs: [rng.array(shape)],
      gpu: (x) => upsampleNearest2d(x, s),
      ref: (x) => upsampleRef(x, s),
      refGrad: (dy, x) => {
        // Each input element collects its s×s block of dy.
        const dx = nd(x.shape);
        const [, , h, w] = x.shape;
        for (let o = 0; o < dy.data.length; o++) {
          const j = o % (w * s),
            i = Math.floor(o / (w * s)) % (h * s),
            plane = Math.floor(o / (w * s * h * s));
          dx.data[(plane * h + Math.floor(i / s)) * w + Math.floor(j / s)] += dy.data[o];
        }
        return [dx];
      },
    });
  }
  // Matches torch: F.interpolate(x, scale_factor=2, mode="nearest") repeats each pixel 2x2.
  const x = fromArray([1, 2, 3, 4], [1, 1, 2, 2]);
  const y = upsampleNearest2d(x);
  assertClose(await y.toArray(), [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4], "upsample 2x2");
  x.dispose();
  y.dispose();
});

gpuTest("pooling and upsampling: errors name the op and the shapes", () => {
  const x = zeros([1, 2, 3, 3]);
  const rank3 = zeros([2, 3, 3]);
  assert.throws(() => maxPool2d(rank3, 2), /maxPool2d: expects x of shape \[N, C, H, W\], got \[2, 3, 3\]/);
  assert.throws(() => avgPool2d(rank3, 2), /avgPool2d: expects x of shape \[N, C, H, W\], got \[2, 3, 3\]/);
  assert.throws(() => maxPool2d(x, 4), /maxPool2d: input \[1, 2, 3, 3\] is smaller than the 4x4 window/);
  assert.throws(() => avgPool2d(x, 2, { padding: 2 }), /avgPool2d: padding 2 must be at most half/);
  assert.throws(() => maxPool2d(x, 0), /maxPool2d: kernel must be an integer >= 1, got 0/);
  assert.throws(() => maxPool2d(x, 2, { stride: 1.5 }), /maxPool2d: stride must be an integer >= 1, got 1.5/);
  assert.throws(
    () => globalAvgPool2d(rank3),
    /globalAvgPool2d: expects x of shape \[N, C, H, W\], got \[2, 3, 3\]/,
  );
  assert.throws(() => upsampleNearest2d(rank3), /upsampleNearest2d: expects x of shape \[N, C, H, W\]/);
  assert.throws(() => upsampleNearest2d(x, 1.5), /upsampleNearest2d: scale must be an integer >= 1, got 1.5/);
  // A window past llvmpipe's loop limit is refused there (it would silently stop summing).
  if (currentGpu().adapterClass === "cpu") {
    const big = zeros([1, 1, 182, 182]);
    assert.throws(
      () => avgPool2d(big, 182),
      /avgPool2d: the 182x182 window has 33124 elements; on CPU adapters/,
    );
    big.dispose();
  }
  x.dispose();
  rank3.dispose();
});
