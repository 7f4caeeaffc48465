import assert from "node:assert/strict";
import { currentGpu } from "../../src/device/runtime.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { batchMatmul, linear, matmul, matmulTunables, type MatmulVariant } from "../../src/ops/matmul.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { checkOp } from "../helpers/check_op.ts";
import { Product } from "../helpers/matmul_reference.ts";
import { assertTensorClose, type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

const VARIANTS: MatmulVariant[] = ["cpu", "gpu"];
const TRANSPOSES: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];

/** [M, N, K]: a single element, ragged sizes, 4-aligned but ragged, exact tiles, random. */
const shapeRng = new Rng(5);
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [7, 13, 5],
  [12, 20, 8],
  [33, 17, 65],
  [64, 64, 16],
  // The "cpu" variant's exact tile (8x8 invocations of 16x16 blocks): no clamps, no guards.
  [128, 128, 12],
  ...[0, 1].map((): [
    number,
    number,
    number,
  ] => [shapeRng.int(1, 40), shapeRng.int(1, 40), shapeRng.int(1, 40)]),
];

const label = (tA: boolean, tB: boolean) => `${tA ? "Aᵀ" : "A"}·${tB ? "Bᵀ" : "B"}`;

for (const variant of VARIANTS) {
  gpuTest(`matmul (${variant}): forward and gradients, all transposes, ragged and exact shapes`, async () => {
    const rng = new Rng(11);
    for (const [M, N, K] of SHAPES) {
      for (const [tA, tB] of TRANSPOSES) {
        const p = new Product(1, M, N, K, tA, tB);
        await checkOp({
          name: `matmul ${variant} ${label(tA, tB)} M=${M} N=${N} K=${K}`,
          inputs: [rng.array(tA ? [K, M] : [M, K]), rng.array(tB ? [N, K] : [K, N])],
          gpu: (a, b) => matmul(a, b, { transposeA: tA, transposeB: tB, variant }),
          ref: (a, b) => p.forward(a, b, [M, N]),
          refGrad: (dy, a, b) => p.backward(dy, a, b),
          fdSamples: 8,
        });
      }
    }
  });

  gpuTest(`batchMatmul (${variant}): forward and gradients`, async () => {
    const rng = new Rng(12);
    // [batch, M, N, K]; the last is the "cpu" variant's exact tile.
    const cases: [number, number, number, number][] = [
      [1, 7, 13, 5],
      [3, 12, 8, 20],
      [2, 64, 64, 16],
      [2, 128, 128, 8],
    ];
    for (const [batch, M, N, K] of cases) {
      for (const [tA, tB] of TRANSPOSES) {
        const p = new Product(batch, M, N, K, tA, tB);
        await checkOp({
          name: `batchMatmul ${variant} ${label(tA, tB)} B=${batch} M=${M} N=${N} K=${K}`,
          inputs: [
            rng.array(tA ? [batch, K, M] : [batch, M, K]),
            rng.array(tB ? [batch, N, K] : [batch, K, N]),
          ],
          gpu: (a, b) => batchMatmul(a, b, { transposeA: tA, transposeB: tB, variant }),
          ref: (a, b) => p.forward(a, b, [batch, M, N]),
          refGrad: (dy, a, b) => p.backward(dy, a, b),
          fdSamples: 8,
        });
      }
    }
  });

  gpuTest(`linear (${variant}): forward and gradients with and without bias`, async () => {
    const rng = new Rng(13);
    // [x shape, out features]
    const cases: [number[], number][] = [[[1, 1], 1], [[7, 5], 13], [[33, 65], 17], [[16, 32], 8], [
      [2, 3, 5],
      6,
    ]];
    for (const [xShape, out] of cases) {
      const inF = xShape[xShape.length - 1], rows = xShape.slice(0, -1).reduce((n, d) => n * d, 1);
      // x·Wᵀ is a product with B = W stored [out, in] and read transposed.
      const p = new Product(1, rows, out, inF, false, true);
      const outShape = [...xShape.slice(0, -1), out];
      const withBias = (x: Nd, w: Nd, b: Nd) => {
        const y = p.forward(x, w, outShape);
        for (let i = 0; i < y.data.length; i++) y.data[i] += b.data[i % out];
        return y;
      };
      const biasGrad = (dy: Nd) => {
        const db = nd([out]);
        for (let i = 0; i < dy.data.length; i++) db.data[i % out] += dy.data[i];
        return db;
      };
      const x = rng.array(xShape), w = rng.array([out, inF]), b = rng.array([out]);
      await checkOp({
        name: `linear ${variant} x=${JSON.stringify(xShape)} out=${out} with bias`,
        inputs: [x, w, b],
        gpu: (xt, wt, bt) => linear(xt, wt, bt, { variant }),
        ref: withBias,
        refGrad: (dy, xr, wr) => [...p.backward(dy, xr, wr), biasGrad(dy)],
        fdSamples: 8,
      });
      // Training on data: x needs no gradient, so its product is skipped (null).
      await checkOp({
        name: `linear ${variant} x=${JSON.stringify(xShape)} out=${out}, parameter gradients only`,
        inputs: [x, w, b],
        gpu: (xt, wt, bt) => linear(xt, wt, bt, { variant }),
        ref: withBias,
        refGrad: (dy, xr, wr) => [null, p.backward(dy, xr, wr)[1], biasGrad(dy)],
        gradInputs: [1, 2],
        fdSamples: 8,
      });
      await checkOp({
        name: `linear ${variant} x=${JSON.stringify(xShape)} out=${out} without bias`,
        inputs: [x, w],
        gpu: (xt, wt) => linear(xt, wt, undefined, { variant }),
        ref: (xr, wr) => p.forward(xr, wr, outShape),
        refGrad: (dy, xr, wr) => p.backward(dy, xr, wr),
        fdSamples: 8,
      });
    }
  });

  gpuTest(`matmul (${variant}): empty inner dimension gives zeros (or the bias)`, async () => {
    const a = fromArray([], [3, 0]), b = fromArray([], [0, 4]);
    const w = fromArray([], [4, 0]), bias = fromArray([1, 2, 3, 4], [4]);
    const c = matmul(a, b, { variant });
    const y = linear(a, w, bias, { variant });
    await assertTensorClose(c, nd([3, 4]), "matmul with K = 0");
    await assertTensorClose(y, nd([3, 4], [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]), "linear with K = 0");
    [a, b, w, bias, c, y].forEach((t) => t.dispose());
  });
}

/** [M, N, K, transposeA, transposeB] of one product. */
type CpuCase = [number, number, number, boolean, boolean];

/** The standard op check (forward and both gradients) on "cpu" matmuls, one per case. */
async function checkCpuProducts(rng: Rng, what: string, cases: CpuCase[]): Promise<void> {
  for (const [M, N, K, tA, tB] of cases) {
    const p = new Product(1, M, N, K, tA, tB);
    await checkOp({
      name: `matmul cpu, ${what}, ${label(tA, tB)} M=${M} N=${N} K=${K}`,
      inputs: [rng.array(tA ? [K, M] : [M, K]), rng.array(tB ? [N, K] : [K, N])],
      gpu: (a, b) => matmul(a, b, { transposeA: tA, transposeB: tB, variant: "cpu" }),
      ref: (a, b) => p.forward(a, b, [M, N]),
      refGrad: (dy, a, b) => p.backward(dy, a, b),
      fdSamples: 4,
    });
  }
}

gpuTest(
  "matmul (cpu): big products take the large register block; ragged, aligned and exact tiles",
  async () => {
    const rng = new Rng(15);
    const gpu = currentGpu();
    const dispatch = gpu.dispatch;
    const sources: string[] = [];
    gpu.dispatch = function (op, source, ...rest) {
      sources.push(source);
      return dispatch.call(this, op, source, ...rest);
    };
    // Every product with A not transposed counts as big: their forwards and the dA = dC·op(B)ᵀ
    // gradients take CPU_BLOCK.large (32x32 outputs per invocation).
    const minSide = matmulTunables.largeBlockMinSide;
    matmulTunables.largeBlockMinSide = 1;
    try {
      const cases: CpuCase[] = [
        [37, 29, 13, false, false], // scalar operands, clamped loads, guarded stores
        [40, 36, 8, false, true], // vec4 operands, A·Bᵀ
        [256, 256, 4, false, false], // whole workgroup tiles (256 columns): no clamps, no guards
      ];
      await checkCpuProducts(rng, "large block", cases);
    } finally {
      matmulTunables.largeBlockMinSide = minSide;
      gpu.dispatch = dispatch;
    }
    const large = sources.filter((s) => s.includes("computes rows row0..row0+31, columns col0..col0+31"));
    assert.ok(large.length >= 3, `the large block ran ${large.length} times`);
  },
);

gpuTest("matmul (cpu): workgroups of 1, 2, 4 and 8 rows (small products take fewer rows)", async () => {
  const rng = new Rng(16);
  const forced = matmulTunables.workgroupRows;
  try {
    for (const rows of [1, 2, 4, 8]) {
      matmulTunables.workgroupRows = rows;
      // Ragged (clamped loads, guarded stores), vec4 Aᵀ·B, and an exact tile of 16 x rows blocks.
      const cases: CpuCase[] = [
        [37, 29, 13, false, false],
        [40, 36, 8, true, false],
        [16 * rows, 128, 4, false, true],
      ];
      await checkCpuProducts(rng, `${rows}-row workgroups`, cases);
    }
    matmulTunables.workgroupRows = 9;
    const [a, b] = [fromArray([1, 2], [1, 2]), fromArray([3, 4], [2, 1])];
    assert.throws(
      () => matmul(a, b, { variant: "cpu" }),
      /matmul: matmulTunables.workgroupRows must be .* 1 to 8 .*got 9/,
    );
    [a, b].forEach((t) => t.dispose());
  } finally {
    matmulTunables.workgroupRows = forced;
  }
});

gpuTest("matmul: without a variant option, follows matmulTunables.variant, else the adapter", async () => {
  const rng = new Rng(14);
  const p = new Product(1, 9, 6, 7, false, false);
  const a = rng.array([9, 7]), b = rng.array([7, 6]);
  for (const forced of [null, ...VARIANTS]) {
    matmulTunables.variant = forced;
    try {
      await checkOp({
        name: `matmul with matmulTunables.variant = ${forced}`,
        inputs: [a, b],
        gpu: (x, y) => matmul(x, y),
        ref: (x, y) => p.forward(x, y, [9, 6]),
      });
    } finally {
      matmulTunables.variant = null;
    }
  }
});

gpuTest("matmul, batchMatmul, linear: shape errors name the op and both shapes", () => {
  const t = (...shape: number[]) => fromArray(new Float32Array(shape.reduce((n, d) => n * d, 1)), shape);
  const tensors: Tensor[] = [];
  const keep = (x: Tensor) => (tensors.push(x), x);
  const [a23, a45, a3, b234, b345, w43, w53] = [
    keep(t(2, 3)),
    keep(t(4, 5)),
    keep(t(3)),
    keep(t(2, 3, 4)),
    keep(t(3, 4, 5)),
    keep(t(4, 3)),
    keep(t(5, 3)),
  ];
  assert.throws(() => matmul(a23, a45), /matmul: .*a \[2, 3\].*3 columns.*b \[4, 5\].*4 rows/);
  assert.throws(() => matmul(a23, a23), /matmul: .*\[2, 3\].*\[2, 3\]/);
  assert.throws(
    () => matmul(a23, a45, { transposeA: true }),
    /matmul: .*a \[2, 3\] \(transposed\).*b \[4, 5\]/,
  );
  assert.throws(() => matmul(a3, a23), /matmul: expects 2-D matrices, got a \[3\] and b \[2, 3\]/);
  assert.throws(() => batchMatmul(a23, a45), /batchMatmul: expects 3-D/);
  assert.throws(
    () => batchMatmul(b234, b345),
    /batchMatmul: batch sizes differ: a \[2, 3, 4\].*b \[3, 4, 5\]/,
  );
  assert.throws(() => linear(a45, w43), /linear: x \[4, 5\] has 5 features but weight \[4, 3\] expects 3/);
  assert.throws(() => linear(a23, w43, w53), /linear: bias \[5, 3\] must be \[4\]/);
  assert.throws(() => linear(a23, w43, a3), /linear: bias \[3\] must be \[4\]/);
  const i32 = fromArray(new Int32Array(6), [2, 3]);
  assert.throws(() => matmul(i32, w43, { transposeB: true }), /matmul: expects f32/);
  tensors.forEach((x) => x.dispose());
  i32.dispose();
});
