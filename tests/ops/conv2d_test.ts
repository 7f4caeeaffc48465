import assert from "node:assert/strict";
import { fromArray } from "../../src/ops/creation.ts";
import { conv2d, conv2dBackwardData, conv2dBackwardFilter } from "../../src/ops/conv2d.ts";
import { CONV_TUNING } from "../../shaders/conv2d_forward.ts";
import { grad } from "../../src/autograd/backward.ts";
import { currentGpu } from "../../src/device/runtime.ts";
import { add, mul } from "../../src/ops/arithmetic.ts";
import { sum } from "../../src/ops/reduce.ts";
import { checkOp } from "../helpers/check_op.ts";
import {
  cfg,
  checkConfig,
  type Config,
  convRef,
  convRefGrad,
  describe,
  options,
  outSize,
} from "../helpers/conv_reference.ts";
import { assertClose, type Nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

/** Hand-picked configurations: every case the models use, and every kernel path. */
const FIXED: Config[] = [
  // ResNet 3x3 pad 1, both strides; 16+ output channels and 8+ columns: the largest tile.
  cfg({ batch: 2, inC: 3, outC: 17, h: 9, w: 12, kh: 3, kw: 3, padding: [1, 1] }),
  cfg({ batch: 2, inC: 5, outC: 6, h: 8, w: 8, kh: 3, kw: 3, padding: [1, 1], stride: [2, 2] }),
  // Wide grids (16-column tiles): a partial tile, and an aligned one with vec4 loads and stores.
  cfg({ inC: 3, outC: 17, h: 6, w: 18, kh: 3, kw: 3, padding: [1, 1] }),
  cfg({ batch: 2, inC: 2, outC: 5, h: 9, w: 16, kh: 3, kw: 3, padding: [1, 1], bias: false }),
  // Short 4-aligned rows (the filter gradient unrolls them): 8 wide, and 16 -> 8 at stride 2.
  cfg({ batch: 2, inC: 4, outC: 9, h: 6, w: 8, kh: 3, kw: 3, padding: [1, 1] }),
  cfg({ batch: 2, inC: 3, outC: 8, h: 5, w: 16, kh: 3, kw: 3, padding: [1, 1], stride: [2, 2], bias: false }),
  // Filter gradient over rows wider than 8 with carried x blocks: the 8x4 channel block, with
  // partial blocks of both kinds of channel, at stride 1 (vec4 dy) and 2 (12-wide dy rows).
  cfg({ batch: 2, inC: 5, outC: 17, h: 5, w: 16, kh: 3, kw: 3, padding: [1, 1], bias: false }),
  cfg({ inC: 6, outC: 18, h: 6, w: 24, kh: 3, kw: 3, padding: [1, 1], stride: [2, 2] }),
  // 1x1 projection shortcut, stride 2, no bias.
  cfg({ inC: 7, outC: 9, h: 7, w: 6, kh: 1, kw: 1, stride: [2, 2], bias: false }),
  // Strided data gradients with every phase in one pass: 16-column tiles over a partial last
  // tile (3x3 with aligned dy rows, a wide 1x1 shortcut), stride 4 (a patchify conv); stride 3
  // runs one pass per phase.
  cfg({ batch: 2, inC: 17, outC: 3, h: 18, w: 32, kh: 3, kw: 3, padding: [1, 1], stride: [2, 2] }),
  cfg({ inC: 16, outC: 8, h: 9, w: 20, kh: 1, kw: 1, stride: [2, 2], bias: false }),
  cfg({ inC: 2, outC: 5, h: 12, w: 16, kh: 4, kw: 4, stride: [4, 4] }),
  cfg({ inC: 3, outC: 4, h: 10, w: 11, kh: 3, kw: 3, padding: [1, 1], stride: [3, 3] }),
  // Phased data gradients whose dy rows are 4 wide (vec4 loads) under a narrow dx: 7 -> 4 at
  // stride 2 (ResNet's last stage on 28x28), 13 -> 4 at stride 4. A tile's dy origin must stay
  // 4-aligned (it was not: dx columns 4-6 got dy columns 0-1).
  cfg({ inC: 3, outC: 4, h: 7, w: 7, kh: 3, kw: 3, padding: [1, 1], stride: [2, 2] }),
  cfg({ inC: 2, outC: 3, h: 7, w: 7, kh: 1, kw: 1, stride: [2, 2], bias: false }),
  cfg({ inC: 2, outC: 3, h: 9, w: 13, kh: 1, kw: 1, stride: [4, 4] }),
  // PatchGAN 4x4 stride 2 pad 1; 5x5 pad 2.
  cfg({ batch: 2, inC: 3, outC: 5, h: 10, w: 9, kh: 4, kw: 4, padding: [1, 1], stride: [2, 2] }),
  cfg({ inC: 4, outC: 3, h: 6, w: 7, kh: 5, kw: 5, padding: [2, 2] }),
  // Purifier dilated 3x3 convs (dilation = padding keeps the size).
  cfg({ inC: 3, outC: 4, h: 8, w: 8, kh: 3, kw: 3, padding: [2, 2], dilation: [2, 2] }),
  cfg({ inC: 2, outC: 5, h: 9, w: 8, kh: 3, kw: 3, padding: [4, 4], dilation: [4, 4] }),
  cfg({ inC: 2, outC: 3, h: 5, w: 4, kh: 3, kw: 3, padding: [16, 16], dilation: [16, 16] }),
  // Asymmetric stride / padding / dilation.
  cfg({ inC: 3, outC: 4, h: 7, w: 9, kh: 3, kw: 2, stride: [1, 2], padding: [2, 0], dilation: [1, 2] }),
  // Input channels split over several uniform chunks (accumulating), partial output chunks.
  cfg({ inC: 48, outC: 20, h: 5, w: 4, kh: 5, kw: 5, padding: [2, 2], bias: false }),
  cfg({ inC: 20, outC: 48, h: 4, w: 5, kh: 5, kw: 5, padding: [2, 1] }),
];

/** Seeded random configurations over the same space. */
function randomConfigs(count: number, seed: number): Config[] {
  const rng = new Rng(seed);
  const out: Config[] = [];
  while (out.length < count) {
    const k = rng.pick([1, 3, 3, 4, 5]);
    const d = k === 1 ? 1 : rng.pick([1, 1, 2, 4]);
    const c = cfg({
      batch: rng.int(1, 2),
      inC: rng.int(1, 9),
      outC: rng.int(1, 19),
      h: rng.int(3, 11),
      w: rng.int(3, 11),
      kh: k,
      kw: rng.pick([k, k, 1, 3]),
      stride: [rng.int(1, 2), rng.int(1, 2)],
      padding: [rng.int(0, 2), rng.int(0, 2)],
      dilation: [d, rng.pick([1, d])],
      bias: rng.next() < 0.5,
    });
    const [ho, wo] = outSize(c);
    if (ho >= 1 && wo >= 1) out.push(c);
  }
  return out;
}

for (const variant of ["cpu", "gpu"] as const) {
  gpuTest(`conv2d ${variant}: forward, dx, dw, dbias on fixed configurations`, async () => {
    let seed = 100;
    for (const c of FIXED) await checkConfig(c, variant, seed++);
  });
  gpuTest(`conv2d ${variant}: forward, dx, dw, dbias on random configurations`, async () => {
    let seed = 500;
    for (const c of randomConfigs(8, variant === "cpu" ? 1 : 2)) await checkConfig(c, variant, seed++);
  });
}

gpuTest("conv2d cpu: rows of 28 columns in whole-row tiles (large convs only)", async (gpu) => {
  // 28 columns (Fashion-MNIST): one tile per row, 2 rows each, the last one partial. Tests are
  // small, so the size threshold is lifted; the dispatched shaders must use the whole-row tile.
  const c = cfg({ inC: 3, outC: 17, h: 5, w: 28, kh: 3, kw: 3, padding: [1, 1] });
  const before = CONV_TUNING.wholeRowMinPixels;
  const tiles: string[] = [];
  const dispatch = gpu.dispatch.bind(gpu);
  gpu.dispatch = (op, source, ...rest) => {
    tiles.push(...(source.match(/Tile of .* per invocation/g) ?? []));
    dispatch(op, source, ...rest);
  };
  CONV_TUNING.wholeRowMinPixels = 0;
  try {
    await checkConfig(c, "cpu", 99);
  } finally {
    CONV_TUNING.wholeRowMinPixels = before;
    gpu.dispatch = dispatch;
  }
  // The forward pass and the data gradient (stride 1: the same grid), nothing else.
  assert.ok(tiles.length >= 2 && tiles.every((t) => t.includes("2 rows x 28 columns")), tiles.join("; "));
});

gpuTest("conv2d cpu: filter gradients in 16x4 channel blocks (large convs only)", async (gpu) => {
  // Partial blocks of both kinds of channel (17 output; 66 or 5 input channels), carried 16-wide
  // rows at stride 1 (two rows a step; 64+ input channels) and 2. Tests are small, so the size
  // threshold is lifted; the filter-gradient shaders must use the wide block.
  const configs = [
    cfg({ batch: 2, inC: 66, outC: 17, h: 4, w: 16, kh: 3, kw: 3, padding: [1, 1] }),
    cfg({ batch: 2, inC: 5, outC: 17, h: 8, w: 32, kh: 3, kw: 3, padding: [1, 1], stride: [2, 2] }),
  ];
  const before = CONV_TUNING.filterWideBlockMinPositions;
  const blocks: string[] = [];
  const dispatch = gpu.dispatch.bind(gpu);
  gpu.dispatch = (op, source, ...rest) => {
    if (op === "conv2d.backwardFilter") {
      blocks.push(...(source.match(/\d+ output channels x \d+ input channels/g) ?? []));
    }
    dispatch(op, source, ...rest);
  };
  CONV_TUNING.filterWideBlockMinPositions = 0;
  try {
    for (const [i, c] of configs.entries()) await checkConfig(c, "cpu", 120 + i);
  } finally {
    CONV_TUNING.filterWideBlockMinPositions = before;
    gpu.dispatch = dispatch;
  }
  assert.ok(
    blocks.length >= 2 && blocks.every((b) => b === "16 output channels x 4 input channels"),
    blocks.join("; "),
  );
});

gpuTest("conv2d: gradient of one input only (the others skip their kernels)", async () => {
  const c = cfg({ batch: 2, inC: 3, outC: 5, h: 6, w: 8, kh: 3, kw: 3, padding: [1, 1], stride: [2, 1] });
  const rng = new Rng(3);
  const inputs = [
    rng.array([c.batch, c.inC, c.h, c.w]),
    rng.array([c.outC, c.inC, 3, 3]),
    rng.array([c.outC]),
  ];
  for (const gradInputs of [[0], [1], [2]]) {
    await checkOp({
      name: `conv2d grad of input ${gradInputs} only`,
      inputs,
      gpu: (x, w, b) => conv2d(x, w, b, options(c, "cpu")),
      ref: (x, w, b) => convRef(c, x, w, b),
      refGrad: (dy, x, w) => convRefGrad(c, dy, x, w),
      gradInputs,
      tol: { rtol: 1e-4, atol: 1e-4 },
      fdSamples: 6,
    });
  }
});

gpuTest(
  "conv2d: an input's gradient from several branches is added in place (no add pass on cpu)",
  async () => {
    // x feeds four convs (3x3 at stride 1 and 2, the strided one in phased passes; 1x1 at
    // stride 2, whose phases without taps skip their stores when adding; 1x1 at stride 3, one
    // pass per phase, whose passes without taps are skipped when adding) and a skip term:
    // f(x) = sum(conv_a(x) * ra) + sum(conv_b(x) * rb) + sum(conv_c(x) * rc) + sum(conv_d(x) * rd)
    //   + sum(x * rs).
    // Walking back, the skip's gradient comes first and each conv's data gradient is added into
    // it in place. A residual
    // x + conv(x) shares one gradient buffer between both inputs: that one must not be written
    // in place, and is added instead.
    const a = cfg({ batch: 2, inC: 4, outC: 6, h: 9, w: 12, kh: 3, kw: 3, padding: [1, 1] });
    const b = cfg({ batch: 2, inC: 4, outC: 5, h: 9, w: 12, kh: 3, kw: 3, padding: [1, 1], stride: [2, 2] });
    const c1 = cfg({ batch: 2, inC: 4, outC: 3, h: 9, w: 12, kh: 1, kw: 1, stride: [2, 2] });
    const d = cfg({ batch: 2, inC: 4, outC: 2, h: 9, w: 12, kh: 1, kw: 1, stride: [3, 3] });
    const rng = new Rng(21);
    const x = rng.array([a.batch, a.inC, a.h, a.w]);
    const wa = rng.array([a.outC, a.inC, 3, 3]), wb = rng.array([b.outC, b.inC, 3, 3]);
    const wc = rng.array([c1.outC, c1.inC, 1, 1]), wd = rng.array([d.outC, d.inC, 1, 1]);
    const ra = rng.array([a.batch, a.outC, ...outSize(a)]), rb = rng.array([b.batch, b.outC, ...outSize(b)]);
    const rc = rng.array([c1.batch, c1.outC, ...outSize(c1)]),
      rd = rng.array([d.batch, d.outC, ...outSize(d)]);
    const rs = rng.array(x.shape);
    const want = Float64Array.from(rs.data);
    for (const [c, w, r] of [[a, wa, ra], [b, wb, rb], [c1, wc, rc], [d, wd, rd]] as const) {
      convRefGrad(c, r, x, w)[0].data.forEach((v, i) => (want[i] += v));
    }
    const square = cfg({ batch: 2, inC: 4, outC: 4, h: 9, w: 12, kh: 3, kw: 3, padding: [1, 1] });
    const wr = rng.array([4, 4, 3, 3]);
    const wantResidual = Float64Array.from(rs.data);
    convRefGrad(square, rs, x, wr)[0].data.forEach((v, i) => (wantResidual[i] += v));
    const t = (v: Nd) => fromArray(Float32Array.from(v.data), v.shape);
    const [xt, wat, wbt, wct, wdt, wrt, rat, rbt, rct, rdt, rst] = [x, wa, wb, wc, wd, wr, ra, rb, rc, rd, rs]
      .map(t);
    const gpu = currentGpu();
    for (const variant of ["cpu", "gpu"] as const) {
      const labels: string[] = [];
      const dispatch = gpu.dispatch;
      gpu.dispatch = (op, ...rest) => {
        labels.push(op);
        dispatch.call(gpu, op, ...rest);
      };
      const branches = grad((input) => {
        const ya = conv2d(input, wat, undefined, options(a, variant));
        const yb = conv2d(input, wbt, undefined, options(b, variant));
        const yc = conv2d(input, wct, undefined, options(c1, variant));
        const yd = conv2d(input, wdt, undefined, options(d, variant));
        const convs = add(
          add(add(sum(mul(ya, rat)), sum(mul(yb, rbt))), sum(mul(yc, rct))),
          sum(mul(yd, rdt)),
        );
        return add(convs, sum(mul(input, rst)));
      }, [xt]);
      const residual = grad(
        (input) => sum(mul(add(input, conv2d(input, wrt, undefined, options(square, variant))), rst)),
        [xt],
      );
      gpu.dispatch = dispatch;
      assertClose(await branches.grads[0].toArray(), want, `${variant} four convs and a skip`, {
        atol: 1e-4,
      });
      assertClose(await residual.grads[0].toArray(), wantResidual, `${variant} x + conv(x)`, { atol: 1e-4 });
      // Forward: 4 + 1 adds; backward: the residual's shared gradient is added (1), and on gpu
      // the four conv branches too (4).
      assert.equal(labels.filter((l) => l === "add").length, variant === "cpu" ? 6 : 10, variant);
      [branches.value, residual.value, ...branches.grads, ...residual.grads].forEach((v) => v.dispose());
    }
    [xt, wat, wbt, wct, wdt, wrt, rat, rbt, rct, rdt, rst].forEach((v) => v.dispose());
  },
);

gpuTest("conv2d: backward entry points, long reductions split in partial sums", async () => {
  // 2 x 20 x 20 = 800 output positions: the filter gradient splits them in both variants, and
  // walks two output rows per step (cpu, stride 1, even height); 13 columns load x and dy as
  // scalars, and an odd height walks one row per step.
  const configs = [
    cfg({ batch: 2, inC: 6, outC: 10, h: 20, w: 20, kh: 3, kw: 3, padding: [1, 1] }),
    cfg({ batch: 3, inC: 5, outC: 9, h: 10, w: 13, kh: 3, kw: 3, padding: [1, 1] }),
    cfg({ batch: 2, inC: 4, outC: 8, h: 11, w: 16, kh: 3, kw: 3, padding: [1, 1] }),
  ];
  for (const c of configs) {
    const rng = new Rng(9);
    const [ho, wo] = outSize(c);
    const x = rng.array([c.batch, c.inC, c.h, c.w]), w = rng.array([c.outC, c.inC, 3, 3]);
    const dy = rng.array([c.batch, c.outC, ho, wo]);
    const [dxRef, dwRef] = convRefGrad(c, dy, x, w);
    const [xt, wt, dyt] = [x, w, dy].map((a) => fromArray(Float32Array.from(a.data), a.shape));
    for (const variant of ["cpu", "gpu"] as const) {
      const label = `${variant} ${c.h}x${c.w}`;
      const dx = conv2dBackwardData(dyt, wt, x.shape, options(c, variant));
      const dw = conv2dBackwardFilter(xt, dyt, w.shape, options(c, variant));
      assertClose(await dx.toArray(), dxRef.data, `${label} conv2dBackwardData`, { atol: 1e-4 });
      assertClose(await dw.toArray(), dwRef.data, `${label} conv2dBackwardFilter`, { atol: 1e-4 });
      dx.dispose();
      dw.dispose();
    }
    [xt, wt, dyt].forEach((t) => t.dispose());
  }
});

gpuTest("conv2d: filter gradient over splits of several images (short rows carried down)", async () => {
  // 128 channel blocks: two splits of two images each; 8-wide rows take the unrolled path.
  for (const stride of [1, 2]) {
    const c = cfg({ batch: 4, inC: 32, outC: 64, h: 5, w: 8 * stride, kh: 3, kw: 3, padding: [1, 1] });
    c.stride = [stride, stride];
    const rng = new Rng(11 + stride);
    const [ho, wo] = outSize(c);
    const x = rng.array([c.batch, c.inC, c.h, c.w]), w = rng.array([c.outC, c.inC, 3, 3]);
    const dy = rng.array([c.batch, c.outC, ho, wo]);
    const [, dwRef] = convRefGrad(c, dy, x, w);
    const [xt, dyt] = [x, dy].map((a) => fromArray(Float32Array.from(a.data), a.shape));
    const dw = conv2dBackwardFilter(xt, dyt, w.shape, options(c, "cpu"));
    assertClose(await dw.toArray(), dwRef.data, `conv2dBackwardFilter ${describe(c)}`, { atol: 1e-4 });
    [xt, dyt, dw].forEach((t) => t.dispose());
  }
});

gpuTest("conv2d: errors name the op and the shapes", () => {
  const x = fromArray(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]);
  const w = fromArray(new Float32Array(8 * 4 * 3 * 3), [8, 4, 3, 3]);
  const w3 = fromArray(new Float32Array(8 * 3 * 3 * 3), [8, 3, 3, 3]);
  const w7 = fromArray(new Float32Array(8 * 3 * 7 * 7), [8, 3, 7, 7]);
  try {
    assert.throws(
      () => conv2d(x, w),
      /conv2d: input \[2, 3, 4, 4\] has 3 channels but weight \[8, 4, 3, 3\]/,
    );
    assert.throws(() => conv2d(x, w7), /conv2d: kernel 7x7 .* larger than the padded input 4x4/);
    assert.throws(
      () => conv2d(x, w3, undefined, { dilation: 2 }),
      /conv2d: kernel 3x3 with dilation \[2, 2\] spans 5x5/,
    );
    assert.throws(() => conv2d(x, w3, undefined, { stride: 0 }), /conv2d: stride must be positive integers/);
    assert.throws(() => conv2d(x, w3, undefined, { stride: [1, 1.5] }), /conv2d: stride must be positive/);
    assert.throws(() => conv2d(x, w3, undefined, { padding: -1 }), /conv2d: padding must be non-negative/);
    assert.throws(
      () => conv2d(x.alias([6, 4, 4]), w3),
      /conv2d: input must be \[N, Cin, H, W\], got \[6, 4, 4\]/,
    );
    assert.throws(() => conv2d(x, w3, x.alias([96])), /conv2d: bias \[96\] must be \[8\]/);
    const dy = fromArray(new Float32Array(2 * 8 * 3 * 3), [2, 8, 3, 3]);
    assert.throws(
      () => conv2dBackwardData(dy, w3, [2, 3, 4, 4]),
      /conv2d\.backwardData: dy \[2, 8, 3, 3\] must be the conv output shape \[2, 8, 2, 2\]/,
    );
    dy.dispose();
  } finally {
    [x, w, w3, w7].forEach((t) => t.dispose());
  }
});
