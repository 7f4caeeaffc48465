import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { flowSmoothness, gridSample, identityGrid } from "../../src/ops/grid_sample.ts";
import { sub } from "../../src/ops/arithmetic.ts";
import { sum } from "../../src/ops/reduce.ts";
import { tidy } from "../../src/tensor/scope.ts";
import { checkOp } from "../helpers/check_op.ts";
import { assertClose, type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

// ---- float64 references ----

/** Bilinear taps of one grid point: [(row, col, weight)] for the 4 corners (some outside). */
function taps(gx: number, gy: number, h: number, w: number): [number, number, number][] {
  const ix = ((gx + 1) * w - 1) / 2, iy = ((gy + 1) * h - 1) / 2;
  const x0 = Math.floor(ix), y0 = Math.floor(iy), fx = ix - x0, fy = iy - y0;
  return [
    [y0, x0, (1 - fy) * (1 - fx)],
    [y0, x0 + 1, (1 - fy) * fx],
    [y0 + 1, x0, fy * (1 - fx)],
    [y0 + 1, x0 + 1, fy * fx],
  ];
}

function refGridSample(x: Nd, grid: Nd): Nd {
  const [n, c, h, w] = x.shape, [, ho, wo] = grid.shape;
  const out = nd([n, c, ho, wo]);
  for (let b = 0; b < n; b++) {
    for (let q = 0; q < ho * wo; q++) {
      const g = (b * ho * wo + q) * 2;
      for (const [r, col, wt] of taps(grid.data[g], grid.data[g + 1], h, w)) {
        if (r < 0 || col < 0 || r >= h || col >= w) continue;
        for (let ch = 0; ch < c; ch++) {
          out.data[(b * c + ch) * ho * wo + q] += wt * x.data[((b * c + ch) * h + r) * w + col];
        }
      }
    }
  }
  return out;
}

function refGridSampleGrad(dy: Nd, x: Nd, grid: Nd): Nd[] {
  const [n, c, h, w] = x.shape, [, ho, wo] = grid.shape;
  const dx = nd(x.shape), dgrid = nd(grid.shape);
  const at = (b: number, ch: number, r: number, col: number) =>
    r < 0 || col < 0 || r >= h || col >= w ? 0 : x.data[((b * c + ch) * h + r) * w + col];
  for (let b = 0; b < n; b++) {
    for (let q = 0; q < ho * wo; q++) {
      const g = (b * ho * wo + q) * 2;
      const gx = grid.data[g], gy = grid.data[g + 1];
      const ix = ((gx + 1) * w - 1) / 2, iy = ((gy + 1) * h - 1) / 2;
      const x0 = Math.floor(ix), y0 = Math.floor(iy), fx = ix - x0, fy = iy - y0;
      for (let ch = 0; ch < c; ch++) {
        const d = dy.data[(b * c + ch) * ho * wo + q];
        for (const [r, col, wt] of taps(gx, gy, h, w)) {
          if (r >= 0 && col >= 0 && r < h && col < w) dx.data[((b * c + ch) * h + r) * w + col] += d * wt;
        }
        const v00 = at(b, ch, y0, x0), v01 = at(b, ch, y0, x0 + 1);
        const v10 = at(b, ch, y0 + 1, x0), v11 = at(b, ch, y0 + 1, x0 + 1);
        dgrid.data[g] += d * ((1 - fy) * (v01 - v00) + fy * (v11 - v10)) * w / 2;
        dgrid.data[g + 1] += d * ((1 - fx) * (v10 - v00) + fx * (v11 - v01)) * h / 2;
      }
    }
  }
  return [dx, dgrid];
}

/** A grid coordinate whose pixel position is at least `margin` px from an integer (a kink). */
function offKink(rng: Rng, size: number, lo: number, hi: number, margin = 0.02): number {
  for (;;) {
    const g = Math.fround(rng.uniform(lo, hi));
    const i = ((g + 1) * size - 1) / 2;
    if (Math.abs(i - Math.round(i)) > margin) return g;
  }
}

/** Random grid [n, ho, wo, 2] in [lo, hi], off the kinks. */
function randomGrid(
  rng: Rng,
  n: number,
  ho: number,
  wo: number,
  h: number,
  w: number,
  lo = -1.15,
  hi = 1.15,
): Nd {
  const g = nd([n, ho, wo, 2]);
  for (let i = 0; i < g.data.length; i += 2) {
    g.data[i] = offKink(rng, w, lo, hi);
    g.data[i + 1] = offKink(rng, h, lo, hi);
  }
  return g;
}

/** Identity grid for an ho x wo output, shifted by `shift` px, plus a random flow of up to `px` px, off the kinks. */
function nearIdentityGrid(
  rng: Rng,
  n: number,
  ho: number,
  wo: number,
  h: number,
  w: number,
  px: number,
  shift: [number, number] = [0, 0],
): Nd {
  const g = nd([n, ho, wo, 2]);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < ho; i++) {
      for (let j = 0; j < wo; j++) {
        const k = ((b * ho + i) * wo + j) * 2;
        const gx = (2 * j + 1) / wo - 1 + 2 * shift[0] / w, gy = (2 * i + 1) / ho - 1 + 2 * shift[1] / h;
        g.data[k] = offKink(rng, w, gx - 2 * px / w, gx + 2 * px / w);
        g.data[k + 1] = offKink(rng, h, gy - 2 * px / h, gy + 2 * px / h);
      }
    }
  }
  return g;
}

gpuTest("gridSample: forward and gradients (x and grid) vs float64 reference", async () => {
  const rng = new Rng(17);
  const cases: { name: string; x: number[]; grid: () => Nd }[] = [
    { name: "random grid, 1 channel", x: [1, 1, 5, 7], grid: () => randomGrid(rng, 1, 4, 6, 5, 7) },
    { name: "random grid, 3 channels, batch 2", x: [2, 3, 6, 4], grid: () => randomGrid(rng, 2, 5, 5, 6, 4) },
    {
      name: "random grid, 5 channels (vec4 tail)",
      x: [1, 5, 4, 4],
      grid: () => randomGrid(rng, 1, 3, 7, 4, 4),
    },
    {
      name: "near identity (small reach window)",
      x: [2, 2, 9, 11],
      grid: () => nearIdentityGrid(rng, 2, 9, 11, 9, 11, 0.7),
    },
    {
      name: "resize 6x5 -> 13x3 near identity",
      x: [1, 3, 6, 5],
      grid: () => nearIdentityGrid(rng, 1, 13, 3, 6, 5, 0.4),
    },
    {
      name: "translation by (3.4, −5.2) px plus a small flow",
      x: [2, 1, 10, 9],
      grid: () => nearIdentityGrid(rng, 2, 10, 9, 10, 9, 0.3, [3.4, -5.2]),
    },
    {
      name: "flow of a few pixels",
      x: [1, 1, 12, 12],
      grid: () => nearIdentityGrid(rng, 1, 12, 12, 12, 12, 3),
    },
  ];
  for (const c of cases) {
    await checkOp({
      name: `gridSample ${c.name}`,
      inputs: [rng.array(c.x), c.grid()],
      gpu: (x, g) => gridSample(x, g),
      ref: refGridSample,
      refGrad: refGridSampleGrad,
      eps: 1e-7,
      fdSamples: 40,
      tol: { rtol: 1e-4, atol: 2e-5 },
    });
  }
});

gpuTest(
  "gridSample: dx gathers in several row passes when the window is large (CPU loop limit)",
  async () => {
    // 200 x 200 outputs, a random grid: every input pixel's window spans all outputs, more than
    // one pass's worth on CPU adapters (band = floor(32768 / 201) = 163 rows).
    const rng = new Rng(3);
    await checkOp({
      name: "gridSample 200x200 outputs from a 4x3 image",
      inputs: [rng.array([1, 2, 4, 3]), randomGrid(rng, 1, 200, 200, 4, 3)],
      gpu: (x, g) => gridSample(x, g),
      ref: refGridSample,
      refGrad: refGridSampleGrad,
      eps: 1e-7,
      fdSamples: 6,
      tol: { rtol: 1e-4, atol: 1e-4 },
    });
  },
);

gpuTest("gridSample: identity grid reproduces x; out-of-range grid gives zeros", async () => {
  const rng = new Rng(5);
  for (const [h, w, exact] of [[32, 32, true], [8, 16, true], [28, 28, false], [5, 7, false]] as const) {
    const xs = rng.array([2, 3, h, w]);
    const [x, out] = tidy(() => {
      const x = fromArray(Float32Array.from(xs.data), xs.shape);
      return [x, gridSample(x, identityGrid(2, h, w))];
    });
    const a = await out.toArray(), e = await x.toArray();
    if (exact) assert.deepEqual(a, e, `identity ${h}x${w} must be bit-exact`);
    // Otherwise (2j + 1)/W − 1 is rounded in f32: the sample lands ~1e-7 px off the centre.
    else assertClose(a, e, `identity ${h}x${w}`, { rtol: 0, atol: 4e-6 });
    x.dispose();
    out.dispose();
  }
  // Every sample point at least one pixel beyond an edge: all taps are padding.
  const g = nd([1, 3, 4, 2]);
  const far = [[-1.6, 0], [1.3, 0.2], [0, -1.5], [0.1, 1.26], [-2, -2], [5, 3]];
  for (let i = 0; i < 12; i++) [g.data[2 * i], g.data[2 * i + 1]] = far[i % far.length];
  const xs = rng.array([1, 2, 4, 4]);
  const x = fromArray(Float32Array.from(xs.data), xs.shape),
    gt = fromArray(Float32Array.from(g.data), g.shape);
  const { value, grads } = grad((xx, gg) => sum(gridSample(xx, gg)), [x, gt]);
  const out = tidy(() => gridSample(x, gt));
  assert.deepEqual([...await out.toArray()], new Array(24).fill(0));
  assert.deepEqual([...await grads[0].toArray()], new Array(32).fill(0));
  assert.deepEqual([...await grads[1].toArray()], new Array(24).fill(0));
  for (const t of [x, gt, value, out, ...grads]) t.dispose();
});

gpuTest("gridSample: backward is deterministic (bit-identical over runs)", async () => {
  const rng = new Rng(8);
  const xs = rng.array([3, 3, 10, 10]), gs = nearIdentityGrid(rng, 3, 10, 10, 10, 10, 1.5);
  const x = fromArray(Float32Array.from(xs.data), xs.shape),
    g = fromArray(Float32Array.from(gs.data), gs.shape);
  const dyT = fromArray(Float32Array.from(rng.array([3, 3, 10, 10]).data), [3, 3, 10, 10]);
  const run = async () => {
    const { value, grads } = grad((a, b) => gridSample(a, b), [x, g], dyT);
    const r = [await grads[0].toArray(), await grads[1].toArray()];
    [value, ...grads].forEach((t) => t.dispose());
    return r;
  };
  const [a, b] = [await run(), await run()];
  assert.deepEqual(a[0], b[0]);
  assert.deepEqual(a[1], b[1]);
  [x, g, dyT].forEach((t) => t.dispose());
});

gpuTest("identityGrid: pixel centres (2i + 1)/size − 1, x then y", async () => {
  const t = identityGrid(2, 3, 4);
  const a = await t.toArray();
  for (let b = 0; b < 2; b++) {
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 4; j++) {
        const k = ((b * 3 + i) * 4 + j) * 2;
        assertClose([a[k], a[k + 1]], [(2 * j + 1) / 4 - 1, (2 * i + 1) / 3 - 1], `grid[${b},${i},${j}]`, {
          rtol: 0,
          atol: 1e-7,
        });
      }
    }
  }
  t.dispose();
});

// ---- flow smoothness ----

const NEIGHBOURS = [[0, -1], [0, 1], [-1, 0], [1, 0]];

function refFlowSmoothness(flow: Nd): Nd {
  const [n, h, w] = flow.shape;
  const out = nd([n]);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        for (const [di, dj] of NEIGHBOURS) {
          const qi = i + di, qj = j + dj;
          if (qi < 0 || qj < 0 || qi >= h || qj >= w) continue;
          const p = ((b * h + i) * w + j) * 2, q = ((b * h + qi) * w + qj) * 2;
          const du = flow.data[p] - flow.data[q], dv = flow.data[p + 1] - flow.data[q + 1];
          out.data[b] += Math.sqrt(du * du + dv * dv + 1e-10);
        }
      }
    }
  }
  return out;
}

function refFlowSmoothnessGrad(dy: Nd, flow: Nd): Nd[] {
  const [n, h, w] = flow.shape;
  const g = nd(flow.shape);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        for (const [di, dj] of NEIGHBOURS) {
          const qi = i + di, qj = j + dj;
          if (qi < 0 || qj < 0 || qi >= h || qj >= w) continue;
          const p = ((b * h + i) * w + j) * 2, q = ((b * h + qi) * w + qj) * 2;
          const du = flow.data[p] - flow.data[q], dv = flow.data[p + 1] - flow.data[q + 1];
          const s = Math.sqrt(du * du + dv * dv + 1e-10);
          // The term appears from p and from q: d/dflow(p) of both is 2 (flow(p) − flow(q)) / s.
          g.data[p] += dy.data[b] * 2 * du / s;
          g.data[p + 1] += dy.data[b] * 2 * dv / s;
        }
      }
    }
  }
  return [g];
}

gpuTest("flowSmoothness: forward and gradient vs float64 reference", async () => {
  const rng = new Rng(23);
  for (const shape of [[1, 1, 1, 2], [2, 3, 5, 2], [3, 7, 4, 2], [1, 17, 19, 2]]) {
    await checkOp({
      name: `flowSmoothness ${JSON.stringify(shape)}`,
      inputs: [rng.array(shape, -0.05, 0.05)],
      gpu: (f) => flowSmoothness(f),
      ref: refFlowSmoothness,
      refGrad: refFlowSmoothnessGrad,
      eps: 1e-7,
      tol: { rtol: 2e-4, atol: 1e-5 },
    });
  }
  // Zero flow: each directed pair costs sqrt(1e-10) = 1e-5; identity minus itself is zero flow.
  const t = tidy(() => {
    const id = identityGrid(2, 4, 6);
    return flowSmoothness(sub(id, id));
  });
  const pairs = 2 * (4 * 5 + 3 * 6);
  assertClose(await t.toArray(), [pairs * 1e-5, pairs * 1e-5], "zero flow", { rtol: 1e-4, atol: 0 });
  t.dispose();
});

gpuTest("gridSample / flowSmoothness: clear errors for bad shapes", () => {
  const x = fromArray(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]);
  const bad = [
    [[2, 4, 4, 3], /grid of shape \[N, Ho, Wo, 2\]/],
    [[1, 4, 4, 2], /N = 2/],
    [[2, 16, 2], /grid of shape/],
  ] as const;
  for (const [shape, re] of bad) {
    const g = fromArray(new Float32Array(shape.reduce((a: number, b: number) => a * b, 1)), [...shape]);
    assert.throws(() => gridSample(x, g), re);
    g.dispose();
  }
  const g = identityGrid(2, 4, 4);
  assert.throws(() => gridSample(x.alias([2, 48]), g), /x of shape \[N, C, H, W\]/);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => gridSample(x, g, { padding: "border" as any }), /padding "border" is not supported/);
  assert.throws(() => flowSmoothness(x), /flow of shape \[N, H, W, 2\]/);
  assert.throws(() => identityGrid(1, -2, 3), /h must be an integer/);
  x.dispose();
  g.dispose();
});
