import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { addRelu } from "../../src/ops/arithmetic.ts";
import { fromArray } from "../../src/ops/creation.ts";
import {
  abs,
  clamp,
  elu,
  exp,
  leakyRelu,
  log,
  maximum,
  minimum,
  pow,
  relu,
  sigmoid,
  sign,
  sqrt,
  square,
  tanh,
} from "../../src/ops/unary.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { checkOp } from "../helpers/check_op.ts";
import { assertClose, type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

interface UnaryCase {
  name: string;
  op: (x: Tensor) => Tensor;
  f: (v: number) => number;
  df: (v: number) => number;
  /** Input range. */
  lo: number;
  hi: number;
  /** Kinks to keep inputs away from (finite differences are meaningless there). */
  kinks?: number[];
}

const sigma = (v: number) => 1 / (1 + Math.exp(-v));
const powRef = (p: number) => (v: number) => v ** p;

const UNARY: UnaryCase[] = [
  { name: "exp", op: exp, f: Math.exp, df: Math.exp, lo: -3, hi: 3 },
  { name: "log", op: log, f: Math.log, df: (v) => 1 / v, lo: 0.1, hi: 4 },
  { name: "sqrt", op: sqrt, f: Math.sqrt, df: (v) => 0.5 / Math.sqrt(v), lo: 0.1, hi: 4 },
  { name: "square", op: square, f: (v) => v * v, df: (v) => 2 * v, lo: -2, hi: 2 },
  { name: "abs", op: abs, f: Math.abs, df: Math.sign, lo: -2, hi: 2, kinks: [0] },
  { name: "sign", op: sign, f: Math.sign, df: () => 0, lo: -2, hi: 2, kinks: [0] },
  { name: "relu", op: relu, f: (v) => Math.max(v, 0), df: (v) => (v > 0 ? 1 : 0), lo: -2, hi: 2, kinks: [0] },
  {
    name: "leakyRelu(0.01)",
    op: (x) => leakyRelu(x),
    f: (v) => (v > 0 ? v : 0.01 * v),
    df: (v) => (v > 0 ? 1 : 0.01),
    lo: -2,
    hi: 2,
    kinks: [0],
  },
  {
    name: "leakyRelu(0.2)",
    op: (x) => leakyRelu(x, 0.2),
    f: (v) => (v > 0 ? v : 0.2 * v),
    df: (v) => (v > 0 ? 1 : 0.2),
    lo: -2,
    hi: 2,
    kinks: [0],
  },
  {
    name: "elu(1.5)",
    op: (x) => elu(x, 1.5),
    f: (v) => (v > 0 ? v : 1.5 * (Math.exp(v) - 1)),
    df: (v) => (v > 0 ? 1 : 1.5 * Math.exp(v)),
    lo: -3,
    hi: 2,
    kinks: [0],
  },
  { name: "sigmoid", op: sigmoid, f: sigma, df: (v) => sigma(v) * (1 - sigma(v)), lo: -6, hi: 6 },
  { name: "tanh", op: tanh, f: Math.tanh, df: (v) => 1 - Math.tanh(v) ** 2, lo: -4, hi: 4 },
  {
    name: "clamp(-0.5, 0.7)",
    op: (x) => clamp(x, -0.5, 0.7),
    f: (v) => Math.min(Math.max(v, -0.5), 0.7),
    df: (v) => (v >= -0.5 && v <= 0.7 ? 1 : 0),
    lo: -2,
    hi: 2,
    kinks: [-0.5, 0.7],
  },
  { name: "pow 3", op: (x) => pow(x, 3), f: powRef(3), df: (v) => 3 * v * v, lo: -2, hi: 2 },
  { name: "pow 2", op: (x) => pow(x, 2), f: powRef(2), df: (v) => 2 * v, lo: -2, hi: 2 },
  { name: "pow 1", op: (x) => pow(x, 1), f: powRef(1), df: () => 1, lo: -2, hi: 2 },
  { name: "pow 0", op: (x) => pow(x, 0), f: () => 1, df: () => 0, lo: -2, hi: 2 },
  {
    name: "pow -2",
    op: (x) => pow(x, -2),
    f: powRef(-2),
    df: (v) => -2 * v ** -3,
    lo: -2,
    hi: 2,
    kinks: [0],
  },
  { name: "pow 0.5", op: (x) => pow(x, 0.5), f: powRef(0.5), df: (v) => 0.5 * v ** -0.5, lo: 0.1, hi: 3 },
  { name: "pow -1.5", op: (x) => pow(x, -1.5), f: powRef(-1.5), df: (v) => -1.5 * v ** -2.5, lo: 0.2, hi: 3 },
  { name: "pow 2.7", op: (x) => pow(x, 2.7), f: powRef(2.7), df: (v) => 2.7 * v ** 1.7, lo: 0, hi: 2 },
];

/** Random shapes of rank 1..4, one of them with more than 256 elements (several workgroups). */
// Sizes that are and are not multiples of 4 (vec4 and scalar kernels), > 256 vec4s.
const SHAPES = [[7], [3, 5], [2, 3, 4], [2, 3, 7, 11], [301], [1100]];

/** Uniform in [lo, hi], pushed at least `gap` away from every kink. */
function awayFromKinks(rng: Rng, shape: number[], c: UnaryCase, gap = 0.05): Nd {
  const x = rng.array(shape, c.lo, c.hi);
  for (let i = 0; i < x.data.length; i++) {
    for (const k of c.kinks ?? []) {
      if (Math.abs(x.data[i] - k) < gap) x.data[i] = k + (x.data[i] >= k ? gap : -gap);
    }
  }
  return x;
}

for (const c of UNARY) {
  gpuTest(`${c.name}: forward and gradient`, async () => {
    const rng = new Rng(11);
    for (const shape of SHAPES) {
      await checkOp({
        name: `${c.name} ${JSON.stringify(shape)}`,
        inputs: [awayFromKinks(rng, shape, c)],
        gpu: c.op,
        ref: (x) => nd(x.shape, x.data.map(c.f)),
        refGrad: (dy, x) => [nd(x.shape, x.data.map((v, i) => dy.data[i] * c.df(v)))],
        tol: { rtol: 2e-4, atol: 2e-5 },
      });
    }
  });
}

/** Values and gradients (seeded with dy = 1) at chosen points, kinks included. */
async function atPoints(
  op: (x: Tensor) => Tensor,
  points: number[],
  values: number[],
  grads: number[] | null,
  what: string,
): Promise<void> {
  const x = fromArray(Float32Array.from(points));
  const dy = fromArray(new Float32Array(points.length).fill(1));
  const { value, grads: [dx] } = grad(op, [x], dy);
  assertClose(await value.toArray(), values, `${what}: values`, { rtol: 1e-6, atol: 1e-6 });
  if (grads) assertClose(await dx.toArray(), grads, `${what}: gradients`, { rtol: 1e-6, atol: 1e-6 });
  [x, dy, value, dx].forEach((t) => t.dispose());
}

gpuTest("unary: PyTorch gradient conventions at kinks", async () => {
  await atPoints(relu, [-1, 0, 2], [0, 0, 2], [0, 0, 1], "relu");
  await atPoints(abs, [-1, 0, 2], [1, 0, 2], [-1, 0, 1], "abs");
  await atPoints(sign, [-3, 0, 2], [-1, 0, 1], [0, 0, 0], "sign");
  await atPoints((x) => leakyRelu(x, 0.1), [-1, 0, 2], [-0.1, 0, 2], [0.1, 0.1, 1], "leakyRelu");
  await atPoints((x) => elu(x, 2), [0], [0], [2], "elu");
  // clamp passes the gradient at the bounds themselves.
  await atPoints((x) => clamp(x, -1, 1), [-2, -1, 0, 1, 2], [-1, -1, 0, 1, 1], [0, 1, 1, 1, 0], "clamp");
});

gpuTest("unary: saturation and special values", async () => {
  // Large |x| must saturate, not overflow to NaN (inf / inf).
  await atPoints(sigmoid, [-100, 100, -1e30], [0, 1, 0], [0, 0, 0], "sigmoid");
  await atPoints(tanh, [-100, 100, 1e30], [-1, 1, 1], [0, 0, 0], "tanh");
  await atPoints(exp, [-200, 0], [0, 1], [0, 1], "exp");
  // pow is real-valued: odd integer powers keep the sign; 0^0 = 1; 0^-1 = inf.
  await atPoints((x) => pow(x, 3), [-2, 0, 1.5], [-8, 0, 3.375], [12, 0, 6.75], "pow 3");
  await atPoints((x) => pow(x, 0), [-2, 0, 5], [1, 1, 1], [0, 0, 0], "pow 0");
  await atPoints((x) => pow(x, -1), [0, -4], [Infinity, -0.25], null, "pow -1");
  await atPoints((x) => pow(x, 0.5), [-4, 4], [NaN, 2], null, "pow 0.5");
  // C99 / PyTorch special cases: NaN bases, signed zeros, -inf with fractional exponents.
  await atPoints((x) => pow(x, 2), [NaN, -0], [NaN, 0], [NaN, 0], "pow 2 NaN");
  for (const [p, want] of [[-2, Infinity], [-0.5, Infinity], [-1, -Infinity], [-3, -Infinity]]) {
    await atPoints((x) => pow(x, p), [-0], [want], null, `pow(-0, ${p})`);
  }
  await atPoints((x) => pow(x, 0.5), [-Infinity], [Infinity], null, "pow(-inf, 0.5)");
  await atPoints((x) => pow(x, -1.5), [-Infinity], [0], null, "pow(-inf, -1.5)");
  await atPoints((x) => pow(x, 3), [-Infinity], [-Infinity], null, "pow(-inf, 3)");
  // NaN stays NaN through the max/min-based ops, as in PyTorch (WGSL's max and clamp may drop
  // it); the gradient passes at a NaN, as PyTorch's masks (x <= 0, self < other) are false there.
  await atPoints(relu, [NaN, -1, 3], [NaN, 0, 3], [1, 0, 1], "relu NaN");
  await atPoints(tanh, [NaN, 0], [NaN, 0], [NaN, 1], "tanh NaN");
  await atPoints((x) => clamp(x, 0, 1), [NaN, 2], [NaN, 1], null, "clamp NaN");
  const [a, b] = [fromArray([NaN, 1, 2]), fromArray([0, NaN, 1])];
  const binary = [
    ["maximum", maximum, [NaN, NaN, 2], [[1, 1, 1], [1, 1, 0]]],
    ["minimum", minimum, [NaN, NaN, 1], [[1, 1, 0], [1, 1, 1]]],
    ["addRelu", addRelu, [NaN, NaN, 3], [[1, 1, 1], [1, 1, 1]]],
  ] as const;
  for (const [name, op, want, wantGrads] of binary) {
    const dy = fromArray([1, 1, 1]);
    const { value, grads } = grad(op, [a, b], dy);
    assertClose(await value.toArray(), want, `${name} NaN`, { rtol: 0, atol: 0 });
    for (const k of [0, 1]) {
      assertClose(await grads[k].toArray(), wantGrads[k], `${name} NaN: gradient of input ${k}`, {
        rtol: 0,
        atol: 0,
      });
    }
    [dy, value, ...grads].forEach((t) => t.dispose());
  }
  [a, b].forEach((t) => t.dispose());
});

/** Float64 broadcasting of a binary function over NumPy-style shapes. */
function broadcastRef(a: Nd, b: Nd, f: (x: number, y: number) => number): Nd {
  const rank = Math.max(a.shape.length, b.shape.length);
  const pa = [...Array(rank - a.shape.length).fill(1), ...a.shape];
  const pb = [...Array(rank - b.shape.length).fill(1), ...b.shape];
  const shape = pa.map((d, i) => Math.max(d, pb[i]));
  const out = nd(shape);
  forEachBroadcast(shape, pa, pb, (k, ia, ib) => out.data[k] = f(a.data[ia], b.data[ib]));
  return out;
}

/** Calls fn(flat output index, index into a, index into b) for every output element. */
function forEachBroadcast(
  shape: number[],
  pa: number[],
  pb: number[],
  fn: (k: number, ia: number, ib: number) => void,
): void {
  const n = shape.reduce((x, y) => x * y, 1);
  const idx = new Array(shape.length).fill(0);
  const offset = (p: number[]) => p.reduce((o, d, i) => o * d + (d === 1 ? 0 : idx[i]), 0);
  for (let k = 0; k < n; k++) {
    let r = k;
    for (let d = shape.length - 1; d >= 0; d--) {
      idx[d] = r % shape[d];
      r = Math.floor(r / shape[d]);
    }
    fn(k, offset(pa), offset(pb));
  }
}

/** Gradient of maximum (sign 1) or minimum (sign -1): dy to the winner, halves on ties. */
function extremumGrad(a: Nd, b: Nd, dy: Nd, sign: number): Nd[] {
  const rank = dy.shape.length;
  const pa = [...Array(rank - a.shape.length).fill(1), ...a.shape];
  const pb = [...Array(rank - b.shape.length).fill(1), ...b.shape];
  const ga = nd(a.shape), gb = nd(b.shape);
  forEachBroadcast(dy.shape, pa, pb, (k, ia, ib) => {
    const d = sign * (a.data[ia] - b.data[ib]);
    const share = d > 0 ? 1 : d === 0 ? 0.5 : 0;
    ga.data[ia] += dy.data[k] * share;
    gb.data[ib] += dy.data[k] * (1 - share);
  });
  return [ga, gb];
}

const SHAPE_PAIRS: [number[], number[]][] = [
  [[7], [7]],
  [[3, 5], [5]],
  [[2, 3, 4], [2, 1, 4]],
  [[1], [2, 3]],
  [[4, 1, 3], [5, 1]],
  [[2, 3, 5, 7], [3, 1, 1]],
  [[300], [300]],
];

for (const [name, op, sign] of [["maximum", maximum, 1], ["minimum", minimum, -1]] as const) {
  gpuTest(`${name}: forward and gradients with broadcasting`, async () => {
    const rng = new Rng(5);
    for (const [sa, sb] of SHAPE_PAIRS) {
      await checkOp({
        name: `${name} ${JSON.stringify(sa)} ${JSON.stringify(sb)}`,
        inputs: [rng.array(sa), rng.array(sb)],
        gpu: op,
        ref: (a, b) => broadcastRef(a, b, sign > 0 ? Math.max : Math.min),
        refGrad: (dy, a, b) => extremumGrad(a, b, dy, sign),
      });
    }
  });

  gpuTest(`${name}: ties split the gradient in half (PyTorch)`, async () => {
    const a = fromArray([1, 2, 3, -1]), b = fromArray([1, 0, 3, 5]);
    const dy = fromArray([1, 1, 2, 1]);
    const { value, grads: [da, db] } = grad(op, [a, b], dy);
    const expectA = sign > 0 ? [0.5, 1, 1, 0] : [0.5, 0, 1, 1];
    assertClose(await da.toArray(), expectA, `${name} da`);
    assertClose(await db.toArray(), expectA.map((v, i) => [1, 1, 2, 1][i] - v), `${name} db`);
    [a, b, dy, value, da, db].forEach((t) => t.dispose());
  });
}

gpuTest("unary: argument and shape errors name the op", () => {
  const x = fromArray([1, 2, 3, 4, 5, 6], [2, 3]);
  const y = fromArray([1, 2, 3, 4], [4]);
  const i = fromArray(new Int32Array([1, 2]));
  assert.throws(() => clamp(x, 1, 0), /clamp: lower bound 1 must not exceed upper bound 0/);
  assert.throws(() => maximum(x, y), /maximum: shapes \[2, 3\] and \[4\] do not broadcast/);
  assert.throws(() => minimum(x, y), /minimum: shapes \[2, 3\] and \[4\] do not broadcast/);
  assert.throws(() => pow(x, NaN), /pow: exponent must be finite/);
  assert.throws(() => relu(i), /relu: expects f32 tensors, got i32\[2\]/);
  [x, y, i].forEach((t) => t.dispose());
});
