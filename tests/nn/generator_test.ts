/**
 * Purifier generators: CoarseGenerator (CPU variant, ATOP.md §7) and DeepFillGenerator (the
 * paper's two-stage network, §3) with contextual attention. Forward against float64
 * references built from the models' own weights, gradients against central finite
 * differences, shapes at 28×28×1 / 32×32×3 / odd sizes, parameter counts.
 */
import assert from "node:assert/strict";
import { grad, gradScope } from "../../src/autograd/backward.ts";
import { currentGpu } from "../../src/device/runtime.ts";
import { CoarseGenerator, generatorInput } from "../../src/models/generator.ts";
import {
  contextualAttention,
  DeepFillGenerator,
  patchKernels,
  validPatches,
} from "../../src/models/deepfill.ts";
import { gatedActivation } from "../../src/ops/gated_activation.ts";
import { avgPool2d, upsampleNearest2d } from "../../src/ops/pool.ts";
import { add, mul } from "../../src/ops/arithmetic.ts";
import { conv2d } from "../../src/ops/conv2d.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { l1Loss } from "../../src/ops/loss.ts";
import { manualSeed, rand } from "../../src/ops/random.ts";
import { sum } from "../../src/ops/reduce.ts";
import { tidy } from "../../src/tensor/scope.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { checkOp } from "../helpers/check_op.ts";
import { gateRef, gateRefGrad } from "../helpers/gated_reference.ts";
import { assertClose, type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

// ---- float64 references ----------------------------------------------------------------

interface ConvGeometry {
  stride: number;
  padding: number;
  dilation: number;
}

/** Calls f(xIndex, wIndex, yIndex) for every term of y = conv(x, w) (NCHW, OIHW). */
function convTerms(x: Nd, w: Nd, g: ConvGeometry, f: (xi: number, wi: number, yi: number) => void): number[] {
  const [n, c, h, wd] = x.shape, [o, , kh, kw] = w.shape;
  const ho = Math.floor((h + 2 * g.padding - g.dilation * (kh - 1) - 1) / g.stride) + 1;
  const wo = Math.floor((wd + 2 * g.padding - g.dilation * (kw - 1) - 1) / g.stride) + 1;
  for (let b = 0; b < n; b++) {
    for (let co = 0; co < o; co++) {
      for (let oy = 0; oy < ho; oy++) {
        for (let ox = 0; ox < wo; ox++) {
          const yi = ((b * o + co) * ho + oy) * wo + ox;
          for (let ci = 0; ci < c; ci++) {
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * g.stride - g.padding + ky * g.dilation;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * g.stride - g.padding + kx * g.dilation;
                if (ix < 0 || ix >= wd) continue;
                f(((b * c + ci) * h + iy) * wd + ix, ((co * c + ci) * kh + ky) * kw + kx, yi);
              }
            }
          }
        }
      }
    }
  }
  return [n, o, ho, wo];
}

function convRef(x: Nd, w: Nd, b: Nd | null, g: ConvGeometry): Nd {
  const shape = convTerms(x, w, g, () => {});
  const y = nd(shape);
  const plane = shape[2] * shape[3];
  if (b) { for (let i = 0; i < y.data.length; i++) y.data[i] = b.data[Math.floor(i / plane) % shape[1]]; }
  convTerms(x, w, g, (xi, wi, yi) => (y.data[yi] += x.data[xi] * w.data[wi]));
  return y;
}

function convRefGrad(dy: Nd, x: Nd, w: Nd, g: ConvGeometry): [Nd, Nd, Nd] {
  const dx = nd(x.shape), dw = nd(w.shape), db = nd([w.shape[0]]);
  convTerms(x, w, g, (xi, wi, yi) => {
    dx.data[xi] += dy.data[yi] * w.data[wi];
    dw.data[wi] += dy.data[yi] * x.data[xi];
  });
  const [, o, ho, wo] = dy.shape;
  for (let i = 0; i < dy.data.length; i++) db.data[Math.floor(i / (ho * wo)) % o] += dy.data[i];
  return [dx, dw, db];
}

/** Nearest ×2 upsampling cropped to [h, w]. */
function upsampleRef(x: Nd, h: number, w: number): Nd {
  const [n, c, hi, wi] = x.shape;
  const y = nd([n, c, h, w]);
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        y.data[(p * h + i) * w + j] = x.data[(p * hi + (i >> 1)) * wi + (j >> 1)];
      }
    }
  }
  return y;
}

async function hostParams(m: { namedParameters(): [string, Tensor][] }): Promise<Map<string, Nd>> {
  const out = new Map<string, Nd>();
  for (const [name, t] of m.namedParameters()) out.set(name, nd([...t.shape], await t.toArray()));
  return out;
}

/** The CoarseGenerator's forward in float64, from its weights (mirrors the documented layout). */
function coarseRef(x: Nd, p: Map<string, Nd>): Nd {
  const gconv = (v: Nd, name: string, k: number, stride = 1, dilation = 1) =>
    gateRef(
      convRef(v, p.get(`${name}.conv.weight`)!, p.get(`${name}.conv.bias`)!, {
        stride,
        dilation,
        padding: (dilation * (k - 1)) / 2,
      }),
    );
  const [, , h, w] = x.shape;
  let y = gconv(x, "conv1", 5);
  y = gconv(y, "down", 3, 2);
  y = gconv(y, "conv2", 3);
  y = gconv(y, "atrous1", 3, 1, 2);
  y = gconv(y, "atrous2", 3, 1, 4);
  y = gconv(y, "conv3", 3);
  y = gconv(upsampleRef(y, h, w), "up_conv", 3);
  y = convRef(y, p.get("to_image.weight")!, p.get("to_image.bias")!, { stride: 1, padding: 1, dilation: 1 });
  return nd(y.shape, y.data.map(Math.tanh));
}

/** A random generator input: image in [-1, 1] with the masked pixels zeroed, ones, mask. */
function randomInput(rng: Rng, n: number, c: number, h: number, w: number): Nd {
  const x = nd([n, c + 2, h, w]);
  const plane = h * w;
  for (let b = 0; b < n; b++) {
    for (let k = 0; k < plane; k++) {
      const masked = rng.next() < 0.3 ? 1 : 0;
      for (let ch = 0; ch < c; ch++) x.data[(b * (c + 2) + ch) * plane + k] = masked ? 0 : rng.uniform();
      x.data[(b * (c + 2) + c) * plane + k] = 1;
      x.data[(b * (c + 2) + c + 1) * plane + k] = masked;
    }
  }
  return x;
}

const toTensor = (a: Nd) => fromArray(Float32Array.from(a.data), a.shape);

/** Σ y·dy in float64 on the host, from the GPU's f32 forward. */
async function hostLoss(forward: () => Tensor, dy: Nd): Promise<number> {
  const y = tidy(forward);
  const values = await y.toArray();
  y.dispose();
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i] * dy.data[i];
  return s;
}

/** Central difference of hostLoss w.r.t. element `index` of a GPU tensor (written in place). */
async function finiteDifference(
  t: Tensor,
  index: number,
  eps: number,
  forward: () => Tensor,
  dy: Nd,
): Promise<number> {
  const gpu = currentGpu();
  const original = (await t.toArray())[index];
  const set = (v: number) => gpu.write(t.buffer, Float32Array.of(v), index * 4);
  set(original + eps);
  const plus = await hostLoss(forward, dy);
  set(original - eps);
  const minus = await hostLoss(forward, dy);
  set(original);
  // The step actually taken in f32.
  const step = Math.fround(original + eps) - Math.fround(original - eps);
  return (plus - minus) / step;
}

// ---- tests ---------------------------------------------------------------------------

gpuTest("GatedConv2d: ELU(a)·sigmoid(b) over a conv, forward and gradients vs float64", async () => {
  const rng = new Rng(11);
  for (
    const [cin, cout, k, g, size] of [
      [3, 2, 5, { stride: 1, padding: 2, dilation: 1 }, [2, 6, 7]],
      [2, 3, 3, { stride: 2, padding: 1, dilation: 1 }, [1, 7, 5]],
      [2, 2, 3, { stride: 1, padding: 2, dilation: 2 }, [2, 5, 6]],
    ] as const
  ) {
    const [n, h, w] = size;
    await checkOp({
      name: `gatedConv ${cin}->${cout} k${k} s${g.stride} d${g.dilation} on ${n}x${h}x${w}`,
      inputs: [rng.array([n, cin, h, w]), rng.array([2 * cout, cin, k, k], -0.5, 0.5), rng.array([2 * cout])],
      gpu: (x, wt, b) => gatedActivation(conv2d(x, wt, b, g), cout),
      ref: (x, wt, b) => gateRef(convRef(x, wt, b, g)),
      refGrad: (dy, x, wt, b) => convRefGrad(gateRefGrad(dy, convRef(x, wt, b, g)), x, wt, g),
      tol: { rtol: 1e-4, atol: 1e-5 },
      gradTol: { rtol: 1e-3, atol: 1e-4 },
    });
  }
});

gpuTest(
  "CoarseGenerator: forward matches a float64 reference of its layers (odd and even sizes)",
  async () => {
    manualSeed(21);
    const rng = new Rng(21);
    for (const [c, h, w] of [[1, 8, 8], [3, 7, 9]]) {
      const g = new CoarseGenerator({ channels: c, width: 3 });
      const input = randomInput(rng, 2, c, h, w);
      const x = toTensor(input);
      const y = tidy(() => g.forward(x));
      assert.deepEqual(y.shape, [2, c, h, w]);
      assertClose(await y.toArray(), coarseRef(input, await hostParams(g)).data, `coarse ${c}x${h}x${w}`, {
        rtol: 1e-4,
        atol: 2e-5,
      });
      for (const t of [x, y]) t.dispose();
      g.dispose();
    }
  },
);

gpuTest(
  "CoarseGenerator: shapes at 28×28×1 and 32×32×3, output in [-1, 1], names, parameter count",
  async () => {
    manualSeed(1);
    // Default width 16: 95,089 parameters for C = 1 (ATOP.md §7 asks for ~25-100 k).
    const g1 = new CoarseGenerator();
    assert.equal(g1.width, 16);
    assert.equal(g1.parameterCount(), 95_089);
    const names = g1.namedParameters().map(([n]) => n);
    assert.deepEqual(names, [
      "conv1.conv.weight",
      "conv1.conv.bias",
      "down.conv.weight",
      "down.conv.bias",
      "conv2.conv.weight",
      "conv2.conv.bias",
      "atrous1.conv.weight",
      "atrous1.conv.bias",
      "atrous2.conv.weight",
      "atrous2.conv.bias",
      "conv3.conv.weight",
      "conv3.conv.bias",
      "up_conv.conv.weight",
      "up_conv.conv.bias",
      "to_image.weight",
      "to_image.bias",
    ]);
    const g3 = new CoarseGenerator({ channels: 3 });
    assert.equal(g3.parameterCount(), 96_979);
    for (const [g, c, s] of [[g1, 1, 28], [g3, 3, 32]] as const) {
      const image = rand([2, c, s, s], { low: -1, high: 1 }), mask = rand([2, 1, s, s]);
      const y = tidy(() => g.forward(generatorInput(image, mask)));
      assert.deepEqual(y.shape, [2, c, s, s]);
      const v = await y.toArray();
      assert.ok(v.every((e) => e >= -1 && e <= 1), "tanh output in [-1, 1]");
      for (const t of [image, mask, y]) t.dispose();
    }
    assert.throws(
      () => g1.forward(rand([1, 2, 8, 8])),
      /CoarseGenerator.*input must be \[N, 3, H, W\].*got \[1, 2, 8, 8\]/,
    );
    g1.dispose();
    g3.dispose();
  },
);

gpuTest("CoarseGenerator: backward reaches every parameter; gradients match finite differences", async () => {
  manualSeed(5);
  const rng = new Rng(5);
  // The second configuration of the float64 test above: an odd size, so the crop is covered.
  const g = new CoarseGenerator({ channels: 3, width: 3 });
  const input = randomInput(rng, 2, 3, 7, 9);
  const x = toTensor(input);
  const dyNd = rng.array([2, 3, 7, 9]);
  const dy = toTensor(dyNd);
  const forward = () => g.forward(x);
  const loss = () => sum(mul(g.forward(x), dy));

  gradScope(() => loss().backward());
  for (const [name, p] of g.namedParameters()) {
    assert.ok(p.grad, `${name} received a gradient`);
    assert.deepEqual(p.grad.shape, p.shape);
  }
  const { value, grads: [dx] } = grad(loss, [x]);
  const dxHost = await dx.toArray();
  value.dispose();
  dx.dispose();

  // f32 forward, f64 loss: eps 1e-2 keeps rounding noise (~1e-6 in the loss) small against the step.
  const eps = 1e-2, tol = { rtol: 3e-2, atol: 3e-4 };
  for (let s = 0; s < 10; s++) {
    const i = Math.floor(rng.next() * x.size);
    const fd = await finiteDifference(x, i, eps, forward, dyNd);
    assertClose([dxHost[i]], [fd], `dL/dx[${i}]`, tol);
  }
  for (
    const name of [
      "conv1.conv.weight",
      "down.conv.bias",
      "atrous2.conv.weight",
      "up_conv.conv.weight",
      "to_image.bias",
    ]
  ) {
    const p = g.namedParameters().find(([n]) => n === name)![1];
    const analytic = await p.grad!.toArray();
    for (let s = 0; s < 3; s++) {
      const i = Math.floor(rng.next() * p.size);
      const fd = await finiteDifference(p, i, eps, forward, dyNd);
      assertClose([analytic[i]], [fd], `dL/d${name}[${i}]`, tol);
    }
  }
  for (const t of [x, dy]) t.dispose();
  g.dispose();
});

/** Contextual attention in float64 (cosine similarity, masked softmax, fold / 9). */
function attentionRef(x: Nd, valid: Nd, scale: number): Nd {
  const [n, c, h, w] = x.shape, l = h * w, k = 9 * c;
  const out = nd(x.shape);
  for (let b = 0; b < n; b++) {
    const patch = (p: number) => {
      const v = new Float64Array(k);
      const py = Math.floor(p / w), px = p % w;
      for (let ch = 0; ch < c; ch++) {
        for (let t = 0; t < 9; t++) {
          const y = py + Math.floor(t / 3) - 1, xx = px + (t % 3) - 1;
          if (y >= 0 && y < h && xx >= 0 && xx < w) v[ch * 9 + t] = x.data[((b * c + ch) * h + y) * w + xx];
        }
      }
      return v;
    };
    const patches = Array.from({ length: l }, (_, p) => patch(p));
    const norms = patches.map((v) => Math.max(1e-4, Math.hypot(...v)));
    const m = Array.from({ length: l }, (_, p) => valid.data[b * l + p]);
    for (let f = 0; f < l; f++) {
      const logits = patches.map((v, bg) => {
        let dot = 0;
        for (let i = 0; i < k; i++) dot += (v[i] / norms[bg]) * (patches[f][i] / norms[f]);
        return scale * dot * m[bg];
      });
      const top = Math.max(...logits);
      const e = logits.map((z) => Math.exp(z - top));
      const total = e.reduce((s, z) => s + z, 0);
      const weights = e.map((z, bg) => (z / total) * m[bg]);
      // Fold: element (ch, t) of the copied patch at f lands on pixel f + offset(t).
      const fy = Math.floor(f / w), fx = f % w;
      for (let ch = 0; ch < c; ch++) {
        for (let t = 0; t < 9; t++) {
          const y = fy + Math.floor(t / 3) - 1, xx = fx + (t % 3) - 1;
          if (y < 0 || y >= h || xx < 0 || xx >= w) continue;
          let v = 0;
          for (let bg = 0; bg < l; bg++) v += weights[bg] * patches[bg][ch * 9 + t];
          out.data[((b * c + ch) * h + y) * w + xx] += v / 9;
        }
      }
    }
  }
  return out;
}

gpuTest(
  "contextualAttention: forward vs float64, gradient vs finite differences, mask of valid patches",
  async () => {
    const rng = new Rng(8);
    const c = 2;
    const kernels = patchKernels(c);
    const x = rng.array([2, c, 4, 5]);
    const valid = nd(
      [2, 1, 4, 5],
      Array.from({ length: 40 }, (_, i) => (i % 7 === 3 || i % 11 === 0 ? 0 : 1)),
    );
    const validT = toTensor(valid);
    await checkOp({
      name: "contextualAttention 2x2x4x5",
      inputs: [x],
      gpu: (t) => contextualAttention(t, validT, kernels, 10),
      ref: (t) => attentionRef(t, valid, 10),
      tol: { rtol: 1e-4, atol: 1e-5 },
    });
    // Gradient w.r.t. x: autograd vs central differences of the GPU forward (scale 2 keeps the
    // softmax smooth enough for f32 differences).
    const xt = toTensor(x), dyNd = rng.array(x.shape), dy = toTensor(dyNd);
    const forward = () => contextualAttention(xt, validT, kernels, 2);
    const { value, grads: [dx] } = grad(() => sum(mul(forward(), dy)), [xt]);
    const dxHost = await dx.toArray();
    for (let s = 0; s < 8; s++) {
      const i = Math.floor(rng.next() * xt.size);
      const fd = await finiteDifference(xt, i, 1e-2, forward, dyNd);
      assertClose([dxHost[i]], [fd], `contextualAttention dL/dx[${i}]`, { rtol: 3e-2, atol: 3e-4 });
    }
    // An all-zero patch (the 3×3 window around pixel (1, 1) in every channel): its norm is
    // clamped, and the gradient stays finite.
    const zeroed = nd(x.shape, x.data);
    for (let ch = 0; ch < 2 * c; ch++) {
      for (let y = 0; y < 3; y++) for (let xx = 0; xx < 3; xx++) zeroed.data[ch * 20 + y * 5 + xx] = 0;
    }
    const zt = toTensor(zeroed);
    const zeroGrad = grad(() => sum(mul(contextualAttention(zt, validT, kernels, 10), dy)), [zt]);
    assert.ok((await zeroGrad.grads[0].toArray()).every(Number.isFinite), "finite gradient at a zero patch");
    for (
      const t of [
        value,
        dx,
        xt,
        dy,
        validT,
        kernels.unfold,
        kernels.fold,
        zt,
        zeroGrad.value,
        zeroGrad.grads[0],
      ]
    ) {
      t.dispose();
    }

    // validPatches: a patch is usable when its 3×3 window at H/4 touches no hole.
    const mask = nd([1, 1, 16, 16]);
    for (let y = 0; y < 4; y++) for (let xx = 0; xx < 4; xx++) mask.data[y * 16 + xx] = 1; // hole in the top-left 4×4
    const m = toTensor(mask);
    const v = validPatches(m);
    assert.deepEqual(v.shape, [1, 1, 4, 4]);
    // The hole covers feature pixels (0..1, 0..1) after two 3×3/2 pools; valid = no hole within ±1.
    const expected = [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1];
    assert.deepEqual(Array.from(await v.toArray()), expected);
    m.dispose();
    v.dispose();
  },
);

gpuTest(
  "DeepFillGenerator: shapes (28×28×1, 32×32×3, odd), x1/x2 in [-1, 1], full-size parameter count",
  async () => {
    manualSeed(2);
    // Full width (24), C = 3: 4,052,478 parameters, as the TF original (ATOP.md: about 4.05 M),
    // whose refinement stage takes the 3-channel composite alone.
    const full = new DeepFillGenerator({ channels: 3, contextualAttention: false });
    assert.equal(full.parameterCount(), 4_052_478);
    assert.deepEqual(full.stage2.hallucination[0].namedParameters().map(([, t]) => t.shape)[0], [
      48,
      3,
      5,
      5,
    ]);
    const names = full.namedParameters().map(([n]) => n);
    for (
      const n of [
        "stage1.conv1.conv.weight",
        "stage1.conv10_atrous.conv.bias",
        "stage1.conv17.weight",
        "stage2.xconv10_atrous.conv.weight",
        "stage2.pmconv6.conv.weight",
        "stage2.allconv11.conv.weight",
        "stage2.allconv17.bias",
      ]
    ) {
      assert.ok(names.includes(n), n);
    }
    full.dispose();
    const c1 = new DeepFillGenerator({ channels: 1, contextualAttention: false });
    assert.equal(c1.parameterCount(), 4_044_842);
    c1.dispose();

    for (
      const [c, h, w, attention] of [[1, 28, 28, true], [3, 32, 32, true], [1, 13, 11, true], [
        3,
        32,
        32,
        false,
      ]] as const
    ) {
      const g = new DeepFillGenerator({ channels: c, width: 2, contextualAttention: attention });
      assert.equal(g.contextualAttention, attention);
      const x = toTensor(randomInput(new Rng(h), 2, c, h, w));
      const { x1, x2 } = tidy(() => g.forwardStages(x));
      for (const [name, y] of [["x1", x1], ["x2", x2]] as const) {
        assert.deepEqual(y.shape, [2, c, h, w], `${name} ${c}x${h}x${w}`);
        assert.ok((await y.toArray()).every((e) => e >= -1 && e <= 1), `${name} in [-1, 1]`);
      }
      for (const t of [x, x1, x2]) t.dispose();
      g.dispose();
    }
  },
);

gpuTest("DeepFillGenerator: dispose() frees everything, the attention's patch kernels included", (gpu) => {
  const before = gpu.memory().bytesInUse;
  new DeepFillGenerator({ channels: 1, width: 2, contextualAttention: true }).dispose();
  // The kernels are kept by a child (stage 2) outside its parameters: Module.dispose() must reach
  // the child's own dispose(). They leaked ~6 MB per generator at width 24.
  assert.equal(gpu.memory().bytesInUse, before);
});

gpuTest("DeepFillGenerator inputScale: the same weights on the upsampled input, pooled back", async () => {
  // One seed, one initialisation: the two generators hold the same weights.
  manualSeed(6);
  const plain = new DeepFillGenerator({ channels: 1, width: 2, contextualAttention: false });
  manualSeed(6);
  const scaled = new DeepFillGenerator({ channels: 1, width: 2, contextualAttention: false, inputScale: 2 });
  const [wPlain, wScaled] = [plain, scaled].map((g) => g.stateDict()["stage1.conv1.conv.weight"]);
  assert.deepEqual(await wScaled.toArray(), await wPlain.toArray());
  const x = toTensor(randomInput(new Rng(6), 2, 1, 8, 8));
  const { x1, x2 } = tidy(() => scaled.forwardStages(x));
  const [r1, r2] = tidy(() => {
    const { x1, x2 } = plain.forwardStages(upsampleNearest2d(x, 2));
    return [avgPool2d(x1, 2), avgPool2d(x2, 2)];
  });
  assert.deepEqual(x2.shape, [2, 1, 8, 8]);
  assertClose(await x1.toArray(), await r1.toArray(), "x1", { rtol: 1e-6, atol: 1e-6 });
  assertClose(await x2.toArray(), await r2.toArray(), "x2", { rtol: 1e-6, atol: 1e-6 });
  // The input gradient reaches every pixel through the resize.
  const { grads: [dx] } = grad((t) => sum(scaled.forward(t)), [x]);
  assert.ok((await dx.toArray()).every(Number.isFinite));
  assert.throws(() => new DeepFillGenerator({ inputScale: 1.5 }), /inputScale must be an integer >= 1/);
  for (const t of [x, x1, x2, r1, r2, dx]) t.dispose();
  plain.dispose();
  scaled.dispose();
});

gpuTest(
  "DeepFillGenerator: backward (L1 on both stages) reaches every parameter, with and without attention",
  async () => {
    manualSeed(4);
    for (const attention of [true, false]) {
      const g = new DeepFillGenerator({ channels: 3, width: 2, contextualAttention: attention });
      const x = toTensor(randomInput(new Rng(4), 2, 3, 16, 16));
      const target = rand([2, 3, 16, 16], { low: -1, high: 1 });
      gradScope(() => {
        const [x1, x2] = g.stageOutputs(x);
        add(l1Loss(x1, target), l1Loss(x2, target)).backward();
      });
      for (const [name, p] of g.namedParameters()) {
        assert.ok(p.grad, `${name} received a gradient (attention ${attention})`);
        const v = await p.grad.toArray();
        assert.ok(v.every(Number.isFinite), `${name} finite`);
      }
      for (const t of [x, target]) t.dispose();
      g.dispose();
    }
  },
);
