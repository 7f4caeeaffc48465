/**
 * Spectral normalisation (ops) and the SN-PatchGAN discriminator: σ against a float64 host
 * power iteration, W/σ's gradient against float64, the persistent u/v updates (training only),
 * shapes, names, parameter counts and a backward pass.
 */
import assert from "node:assert/strict";
import { grad, gradScope } from "../../src/autograd/backward.ts";
import {
  discriminatorInput,
  PatchDiscriminator,
  SpectralNormConv2d,
} from "../../src/models/discriminator.ts";
import { mul, rsubScalar } from "../../src/ops/arithmetic.ts";
import { conv2d } from "../../src/ops/conv2d.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { manualSeed, rand } from "../../src/ops/random.ts";
import { mean, sum } from "../../src/ops/reduce.ts";
import {
  normalizeVector,
  powerIteration,
  spectralNormalize,
  spectralSigma,
} from "../../src/ops/spectral_norm.ts";
import { relu } from "../../src/ops/unary.ts";
import { tidy } from "../../src/tensor/scope.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { discriminatorView } from "../../src/train/pretrain.ts";
import { checkOp } from "../helpers/check_op.ts";
import { assertClose, type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

// ---- float64 host linear algebra ----------------------------------------------------

/** W [rows, cols] (row-major) times x. */
function matVec(w: ArrayLike<number>, rows: number, cols: number, x: ArrayLike<number>): Float64Array {
  const y = new Float64Array(rows);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) y[i] += w[i * cols + j] * x[j];
  return y;
}

/** Wᵀ x. */
function matTVec(w: ArrayLike<number>, rows: number, cols: number, x: ArrayLike<number>): Float64Array {
  const y = new Float64Array(cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) y[j] += w[i * cols + j] * x[i];
  return y;
}

function normalized(x: Float64Array): Float64Array {
  const n = Math.max(Math.hypot(...x), 1e-12);
  return x.map((v) => v / n);
}

/** One step of power iteration in float64: v = Wᵀu/‖·‖, u = Wv/‖·‖. */
function hostStep(w: ArrayLike<number>, rows: number, cols: number, u: Float64Array) {
  const v = normalized(matTVec(w, rows, cols, u));
  return { u: normalized(matVec(w, rows, cols, v)), v };
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

/** The largest singular value, by power iteration on WᵀW in float64 until it stops moving. */
function largestSingularValue(w: ArrayLike<number>, rows: number, cols: number): number {
  let u = normalized(Float64Array.from({ length: rows }, (_, i) => 1 + Math.sin(i + 1)));
  let sigma = 0;
  for (let it = 0; it < 20000; it++) {
    const step = hostStep(w, rows, cols, u);
    u = step.u;
    const next = dot(u, matVec(w, rows, cols, step.v));
    if (Math.abs(next - sigma) < 1e-14 * next) return next;
    sigma = next;
  }
  return sigma;
}

const toTensor = (a: Nd) => fromArray(Float32Array.from(a.data), a.shape);

// ---- spectral norm ops -------------------------------------------------------------

gpuTest(
  "spectral norm: power iteration's σ matches the largest singular value; W/σ has spectral norm 1",
  async () => {
    const rng = new Rng(3);
    // [5, 2500]: the Wv sums run in 3 chunks of partial sums.
    for (const shape of [[6, 3, 3, 3], [40, 3], [5, 2500], [1, 7]]) {
      const rows = shape[0], cols = shape.slice(1).reduce((a, b) => a * b, 1);
      // Rows scaled 1, 2, 3, ...: a clear gap between the top singular values, so 300
      // iterations converge (a wide random matrix has nearly equal singular values).
      const wNd = rng.array(shape);
      wNd.data.forEach((e, k) => (wNd.data[k] = e * (1 + Math.floor(k / cols))));
      const w = toTensor(wNd);
      const u0 = fromArray(Float32Array.from(rng.array([rows]).data)), v0 = fromArray(new Float32Array(cols));
      const u = normalizeVector(u0), v = normalizeVector(v0);
      // normalizeVector: unit length (and an all-zero vector stays zero instead of NaN).
      assertClose([Math.hypot(...await u.toArray())], [1], "‖u‖", { rtol: 1e-6 });
      assert.ok((await v.toArray()).every((e) => e === 0));
      const snapshot = powerIteration(w, u, v, 300);
      const sigma = spectralSigma(w, u, v);
      assert.deepEqual(sigma.shape, []);
      const hostW = Float32Array.from(wNd.data);
      const expected = largestSingularValue(hostW, rows, cols);
      assertClose([await sigma.item()], [expected], `σ of [${shape}]`, { rtol: 1e-4 });
      // The snapshot and the persistent vectors hold the same (unit) values.
      assert.deepEqual(await snapshot.u.toArray(), await u.toArray());
      assert.deepEqual(await snapshot.v.toArray(), await v.toArray());
      const normalizedW = spectralNormalize(w, u, v);
      assert.deepEqual(normalizedW.shape, shape);
      const wn = await normalizedW.toArray();
      assertClose([largestSingularValue(wn, rows, cols)], [1], `‖W/σ‖₂ of [${shape}]`, { rtol: 1e-4 });
      for (const t of [w, u0, v0, u, v, snapshot.u, snapshot.v, sigma, normalizedW]) t.dispose();
    }
  },
);

gpuTest("spectralNormalize: forward W/(uᵀWv) and its gradient (u, v constant) vs float64", async () => {
  const rng = new Rng(9);
  for (const shape of [[3, 2, 3, 3], [4, 1500]]) {
    const rows = shape[0], cols = shape.slice(1).reduce((a, b) => a * b, 1);
    const sigmaOf = (w: Nd, u: Nd, v: Nd) => dot(u.data, matVec(w.data, rows, cols, v.data));
    await checkOp({
      name: `spectralNormalize [${shape}]`,
      // Positive u, v and mostly positive W keep σ away from 0.
      inputs: [rng.array(shape, -0.2, 1), rng.array([rows], 0.1, 1), rng.array([cols], 0.1, 1)],
      gpu: (w, u, v) => spectralNormalize(w, u, v),
      ref: (w, u, v) => {
        const s = sigmaOf(w, u, v);
        return nd(w.shape, w.data.map((e) => e / s));
      },
      refGrad: (dy, w, u, v) => {
        const s = sigmaOf(w, u, v), t = dot(dy.data, w.data);
        const dw = nd(w.shape);
        for (let i = 0; i < rows; i++) {
          for (let j = 0; j < cols; j++) {
            const k = i * cols + j;
            dw.data[k] = dy.data[k] / s - (t / (s * s)) * u.data[i] * v.data[j];
          }
        }
        return [dw, null, null];
      },
      gradInputs: [0],
      tol: { rtol: 1e-5, atol: 1e-6 },
      gradTol: { rtol: 1e-4, atol: 1e-6 },
    });
  }
});

gpuTest(
  "powerIteration: one step as the host's; the forward keeps its snapshot when u, v change later",
  async () => {
    const rng = new Rng(4);
    const [rows, cols] = [5, 12];
    const wNd = rng.array([rows, cols]), dyNd = rng.array([rows, cols]);
    const w = toTensor(wNd), dy = toTensor(dyNd);
    const uStart = normalized(Float64Array.from(rng.array([rows]).data));
    const vStart = normalized(Float64Array.from(rng.array([cols]).data));
    const u = fromArray(Float32Array.from(uStart)), v = fromArray(Float32Array.from(vStart));
    // A training step's forward (one iteration, then W/σ with the snapshot), followed by more
    // in-place updates before the backward runs.
    const { value, grads: [dw] } = grad((weight) => {
      const snap = powerIteration(weight, u, v, 1);
      const y = spectralNormalize(weight, snap.u, snap.v);
      const later = powerIteration(weight, u, v, 3);
      later.u.dispose();
      later.v.dispose();
      return sum(mul(y, dy));
    }, [w]);
    const hostW = Float32Array.from(wNd.data);
    const first = hostStep(hostW, rows, cols, Float64Array.from(Float32Array.from(uStart)));
    const s = dot(first.u, matVec(hostW, rows, cols, first.v)), t = dot(dyNd.data, hostW);
    const expectedDw = Array.from({ length: rows * cols }, (_, k) => {
      const i = Math.floor(k / cols), j = k % cols;
      return dyNd.data[k] / s - (t / (s * s)) * first.u[i] * first.v[j];
    });
    assertClose([await value.item()], [t / s], "Σ dY⊙W/σ with the first step's σ", { rtol: 1e-5 });
    assertClose(await dw.toArray(), expectedDw, "dW uses the snapshot of the first step", {
      rtol: 1e-4,
      atol: 1e-6,
    });
    // The persistent vectors went on: 4 steps in all.
    let hostU: Float64Array = Float64Array.from(Float32Array.from(uStart)), hostV: Float64Array = first.v;
    for (let i = 0; i < 4; i++) ({ u: hostU, v: hostV } = hostStep(hostW, rows, cols, hostU));
    assertClose(await u.toArray(), hostU, "u after 4 steps", { rtol: 1e-4, atol: 1e-6 });
    assertClose(await v.toArray(), hostV, "v after 4 steps", { rtol: 1e-4, atol: 1e-6 });
    for (const x of [w, dy, u, v, value, dw]) x.dispose();
  },
);

gpuTest("spectral norm ops: errors name the op and the expected shapes", () => {
  const w = rand([3, 2, 2, 2]), u = rand([3]), v = rand([8]), bad = rand([7]);
  assert.throws(
    () => spectralNormalize(w, bad, v),
    /spectralNormalize: .*\[3, 8\] matrix, so u must be \[3\] and v \[8\]/,
  );
  assert.throws(() => powerIteration(w, u, bad), /powerIteration: .*v \[8\]/);
  assert.throws(() => powerIteration(w, u, v, -1), /powerIteration: iterations must be an integer >= 0/);
  assert.throws(() => spectralSigma(rand([4]), u, v), /spectralSigma: weight must have rank >= 2/);
  assert.throws(() => normalizeVector(u, bad), /normalizeVector: state .* must have the 3 elements/);
  for (const t of [w, u, v, bad]) t.dispose();
});

// ---- layers and the discriminator -----------------------------------------------------

async function read(t: Tensor): Promise<number[]> {
  return Array.from(await t.toArray());
}

gpuTest("SpectralNormConv2d: training forward updates u and v, eval does not; y = conv(x, W/σ)", async () => {
  manualSeed(6);
  const layer = new SpectralNormConv2d(2, 3, 5, { stride: 2, padding: 2, initialIterations: 0 });
  assert.deepEqual(layer.namedParameters().map(([n]) => n), ["weight_orig", "bias"]);
  assert.deepEqual(layer.namedBuffers().map(([n]) => n), ["weight_u", "weight_v"]);
  const x = rand([2, 2, 9, 9], { low: -1, high: 1 });
  const u0 = await read(layer.weightU), v0 = await read(layer.weightV);
  tidy(() => layer.forward(x)).dispose();
  const u1 = await read(layer.weightU), v1 = await read(layer.weightV);
  assert.notDeepEqual(u1, u0, "training forward moved u");
  assert.notDeepEqual(v1, v0, "training forward moved v");
  // The update is one host power-iteration step from (u0).
  const hostW = await layer.weightOrig.toArray();
  const step = hostStep(hostW, 3, 50, Float64Array.from(u0));
  assertClose(u1, step.u, "u after one step", { rtol: 1e-4, atol: 1e-6 });
  assertClose(v1, step.v, "v after one step", { rtol: 1e-4, atol: 1e-6 });

  layer.eval();
  const y = tidy(() => layer.forward(x));
  assert.deepEqual(await read(layer.weightU), u1, "eval leaves u alone");
  assert.deepEqual(await read(layer.weightV), v1, "eval leaves v alone");
  assert.deepEqual(y.shape, [2, 3, 5, 5]);
  const expected = tidy(() =>
    conv2d(x, spectralNormalize(layer.weightOrig, layer.weightU, layer.weightV), layer.bias, {
      stride: 2,
      padding: 2,
    })
  );
  assert.deepEqual(await y.toArray(), await expected.toArray());
  for (const t of [x, y, expected]) t.dispose();
  layer.dispose();
});

gpuTest("PatchDiscriminator: shapes at 28×28×1 and 32×32×3, names, parameter count, backward", async () => {
  manualSeed(7);
  // Paper size (w = 64, C = 3): 5,946,816 parameters; 4 -> 64 -> 128 -> 256 -> 256 -> 256 -> 256.
  const full = new PatchDiscriminator({ channels: 3 });
  assert.equal(full.parameterCount(), 5_946_816);
  assert.deepEqual(full.convs.map((c) => [c.inChannels, c.outChannels]), [
    [4, 64],
    [64, 128],
    [128, 256],
    [256, 256],
    [256, 256],
    [256, 256],
  ]);
  const names = Object.keys(full.stateDict());
  for (
    const n of ["conv1.weight_orig", "conv1.bias", "conv1.weight_u", "conv1.weight_v", "conv6.weight_orig"]
  ) {
    assert.ok(names.includes(n), n);
  }
  full.dispose();

  for (const [c, s] of [[1, 28], [3, 32]]) {
    const d = new PatchDiscriminator({ channels: c, width: 4 });
    const image = rand([2, c, s, s], { low: -1, high: 1 }), mask = rand([2, 1, s, s]);
    const input = discriminatorInput(image, mask);
    // Six halvings: 28 -> 14 -> 7 -> 4 -> 2 -> 1 -> 1; 32 -> ... -> 1: [N, 4w·1·1].
    const scores = tidy(() => d.forward(input));
    assert.deepEqual(scores.shape, [2, 16]);
    assert.ok((await scores.toArray()).every(Number.isFinite));
    // Hinge loss on "real": every parameter gets a gradient; u and v are buffers, not parameters.
    gradScope(() => mean(relu(rsubScalar(d.forward(input), 1))).backward());
    for (const [name, p] of d.namedParameters()) {
      assert.ok(p.grad, `${name} received a gradient`);
      assert.ok((await p.grad.toArray()).every(Number.isFinite), `${name} finite`);
    }
    assert.ok(d.namedBuffers().every(([, b]) => b.grad === null));
    assert.throws(
      () => d.forward(image),
      /PatchDiscriminator: input must be \[N, \d, H, W\] = concat\(image, mask\)/,
    );
    for (const t of [image, mask, input, scores]) t.dispose();
    d.dispose();
  }
});

gpuTest(
  "pretrain's discriminator view: images and mask at the purifier's scale, 4×4 patches at 256 px",
  async () => {
    const image = fromArray(Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => (i % 7) / 7), [
      2,
      3,
      32,
      32,
    ]);
    const mask = fromArray(Float32Array.from({ length: 2 * 32 * 32 }, (_, i) => (i >> 3) & 1), [
      2,
      1,
      32,
      32,
    ]);
    const view = discriminatorView(image, mask, 8);
    assert.deepEqual(view.shape, [2, 4, 256, 256]);
    const [v, im, m] = [await view.toArray(), await image.toArray(), await mask.toArray()];
    // Nearest upsampling: pixel (y, x) of the view is pixel (y/8, x/8) of the image (or the mask).
    for (const [n, c, y, x] of [[0, 0, 0, 0], [1, 2, 255, 255], [0, 3, 17, 200], [1, 1, 100, 9]]) {
      const src = c < 3
        ? im[((n * 3 + c) * 32 + (y >> 3)) * 32 + (x >> 3)]
        : m[(n * 32 + (y >> 3)) * 32 + (x >> 3)];
      assert.equal(v[((n * 4 + c) * 256 + y) * 256 + x], src, `${[n, c, y, x]}`);
    }
    assert.deepEqual(discriminatorView(image, mask, 1).shape, [2, 4, 32, 32]);
    // Six stride-2 convs: 32 px ends on 1×1 (one score per image), 256 px on 4×4 patches.
    const d = new PatchDiscriminator({ channels: 3, width: 1 });
    assert.deepEqual(d.forward(discriminatorView(image, mask, 1)).shape, [2, 4]);
    assert.deepEqual(d.forward(view).shape, [2, 4 * 16]);
    d.dispose();
  },
);
