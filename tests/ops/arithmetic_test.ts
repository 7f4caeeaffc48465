import {
  add,
  addRelu,
  addScalar,
  div,
  divScalar,
  mul,
  mulScalar,
  neg,
  rdivScalar,
  rsubScalar,
  sub,
  subDiv,
} from "../../src/ops/arithmetic.ts";
import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { sum } from "../../src/ops/reduce.ts";
import { checkOp } from "../helpers/check_op.ts";
import { type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

/** Float64 NumPy-style broadcasting of a binary function, and its gradient sums. */
function broadcastRef(a: Nd, b: Nd, f: (x: number, y: number) => number): Nd {
  const rank = Math.max(a.shape.length, b.shape.length);
  const pa = [...Array(rank - a.shape.length).fill(1), ...a.shape];
  const pb = [...Array(rank - b.shape.length).fill(1), ...b.shape];
  const shape = pa.map((d, i) => Math.max(d, pb[i]));
  const out = nd(shape);
  const idx = new Array(rank).fill(0);
  const offset = (p: number[]) => p.reduce((o, d, i) => o * d + (d === 1 ? 0 : idx[i]), 0);
  for (let k = 0; k < out.data.length; k++) {
    let r = k;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d] = r % shape[d];
      r = Math.floor(r / shape[d]);
    }
    out.data[k] = f(a.data[offset(pa)], b.data[offset(pb)]);
  }
  return out;
}

/** Gradient of a broadcast binary op: elementwise partials summed back to each input's shape. */
function broadcastGrad(
  a: Nd,
  b: Nd,
  dy: Nd,
  da: (x: number, y: number) => number,
  db: (x: number, y: number) => number,
): Nd[] {
  const rank = dy.shape.length;
  const pa = [...Array(rank - a.shape.length).fill(1), ...a.shape];
  const pb = [...Array(rank - b.shape.length).fill(1), ...b.shape];
  const ga = nd(a.shape), gb = nd(b.shape);
  const idx = new Array(rank).fill(0);
  const offset = (p: number[]) => p.reduce((o, d, i) => o * d + (d === 1 ? 0 : idx[i]), 0);
  for (let k = 0; k < dy.data.length; k++) {
    let r = k;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d] = r % dy.shape[d];
      r = Math.floor(r / dy.shape[d]);
    }
    const ia = offset(pa), ib = offset(pb);
    ga.data[ia] += dy.data[k] * da(a.data[ia], b.data[ib]);
    gb.data[ib] += dy.data[k] * db(a.data[ia], b.data[ib]);
  }
  return [ga, gb];
}

const BINARY = [
  { name: "add", op: add, f: (x: number, y: number) => x + y, da: () => 1, db: () => 1 },
  {
    name: "addRelu",
    op: addRelu,
    f: (x: number, y: number) => Math.max(x + y, 0),
    da: (x: number, y: number) => (x + y > 0 ? 1 : 0),
    db: (x: number, y: number) => (x + y > 0 ? 1 : 0),
  },
  { name: "sub", op: sub, f: (x: number, y: number) => x - y, da: () => 1, db: () => -1 },
  {
    name: "mul",
    op: mul,
    f: (x: number, y: number) => x * y,
    da: (_: number, y: number) => y,
    db: (x: number) => x,
  },
  {
    name: "div",
    op: div,
    f: (x: number, y: number) => x / y,
    da: (_: number, y: number) => 1 / y,
    db: (x: number, y: number) => -x / (y * y),
  },
];

const SHAPE_PAIRS: [number[], number[]][] = [
  [[7], [7]],
  [[3, 5], [5]],
  [[2, 3, 4], [2, 1, 4]],
  [[1], [2, 3]],
  [[4, 1, 3], [5, 1]],
  [[2, 3, 5, 7], [3, 1, 1]],
  [[2, 3, 5, 7], [1, 3, 1, 1]], // a per-channel constant: collapses to [2, 3, 35]
  [[1, 6], [6]], // only size-1 dimensions differ: the same-shape path
  [[2, 3, 8], [3, 1]], // four outputs per invocation, b broadcast along the inner dimension
  [[5, 2, 12], [2, 12]], // four outputs per invocation, both inputs read as vec4
  [[2, 1, 3, 1, 2, 5], [3, 4, 1, 5]], // rank 6
  [[300], [300]], // more than one workgroup
  [[4, 257], [4, 257]], // the vec4 path over more than one workgroup
  // Runs of 4 vec4s along an inner dimension of 16+ floats: b loaded once per run (broadcast along
  // it), or per unit; over more than one workgroup.
  [[2, 3, 64], [3, 1]],
  [[3, 16], [16]],
  [[300, 16], [300, 1]],
];

for (const b of BINARY) {
  gpuTest(`${b.name}: forward and gradients with broadcasting`, async () => {
    const rng = new Rng(42);
    for (const [sa, sb] of SHAPE_PAIRS) {
      // Keep divisors away from 0 so finite differences are well conditioned.
      const x = rng.array(sa), y = rng.array(sb, 0.5, 2);
      await checkOp({
        name: `${b.name} ${JSON.stringify(sa)} ${JSON.stringify(sb)}`,
        inputs: [x, y],
        gpu: (p, q) => b.op(p, q),
        ref: (p, q) => broadcastRef(p, q, b.f),
        refGrad: (dy, p, q) => broadcastGrad(p, q, dy, b.da, b.db),
      });
    }
  });
}

gpuTest("subDiv: (a - b) / c in one pass, forward and gradients with broadcasting", async () => {
  const rng = new Rng(11);
  const triples: number[][][] = [
    [[2, 3, 5, 7], [3, 1, 1], [3, 1, 1]], // per-channel normalisation of NCHW
    [[2, 3, 8], [3, 1], [3, 1]], // the vec4 path, b and c broadcast along the inner dimension
    [[2, 3, 8, 8], [3, 1, 1], [3, 1, 1]], // runs of 4 vec4s, b and c loaded once per run
    [[4, 6], [6], [1]],
    [[300], [300], [300]], // same shapes: the rank-1 path over several workgroups
  ];
  for (const [sa, sb, sc] of triples) {
    await checkOp({
      name: `subDiv ${JSON.stringify([sa, sb, sc])}`,
      inputs: [rng.array(sa), rng.array(sb), rng.array(sc, 0.5, 2)],
      gpu: (a, b, c) => subDiv(a, b, c),
      ref: (a, b, c) => broadcastRef(broadcastRef(a, b, (x, y) => x - y), c, (x, y) => x / y),
      refGrad: (dy, a, b, c) => {
        const t = broadcastRef(a, b, (x, y) => x - y);
        const [dt, dc] = broadcastGrad(t, c, dy, (_, y) => 1 / y, (x, y) => -x / (y * y));
        const [da, db] = broadcastGrad(a, b, dt, () => 1, () => -1);
        return [da, db, dc];
      },
    });
  }
});

gpuTest("neg and scalar arithmetic: forward and gradients", async () => {
  const rng = new Rng(7);
  const x = rng.array([3, 17], 0.5, 2);
  const unary = (
    name: string,
    op: (t: import("../../src/tensor/tensor.ts").Tensor) => import("../../src/tensor/tensor.ts").Tensor,
    f: (v: number) => number,
    df: (v: number) => number,
  ) =>
    checkOp({
      name,
      inputs: [x],
      gpu: op,
      ref: (a) => nd(a.shape, a.data.map(f)),
      refGrad: (dy, a) => [nd(a.shape, a.data.map((v, i) => dy.data[i] * df(v)))],
    });
  await unary("neg", neg, (v) => -v, () => -1);
  await unary("mulScalar", (t) => mulScalar(t, 2.5), (v) => 2.5 * v, () => 2.5);
  await unary("addScalar", (t) => addScalar(t, -3), (v) => v - 3, () => 1);
  await unary("rsubScalar", (t) => rsubScalar(t, 1), (v) => 1 - v, () => -1);
  await unary("rdivScalar", (t) => rdivScalar(t, 2), (v) => 2 / v, (v) => -2 / (v * v));
  await unary("divScalar", (t) => divScalar(t, -4), (v) => v / -4, () => -1 / 4);
});

gpuTest("divScalar: a divisor whose reciprocal is no normal f32 still divides (1/s overflowed)", async () => {
  const values = [1e-30, -2.5e-30, 0.75e-30, 0];
  // [s, scale of the values, k]: y = (x·scale) / s, and the gradient of Σ k·y is k / s.
  const cases = [[1e-39, 1, 1e-30], [1e-40, 1, 1e-30], [-3e-39, 1, 1e-30], [1e38, 1e38, 1e30], [0.5, 1, 1]];
  for (const [s, scale, k] of cases) {
    const x = fromArray(Float32Array.from(values, (v) => v * scale), [2, 2]);
    const { grads: [dx] } = grad((t) => sum(mulScalar(divScalar(t, s), k)), [x]);
    const [y, g] = [await divScalar(x, s).toArray(), await dx.toArray()];
    values.forEach((v, i) => {
      const want = Math.fround(v * scale) / s;
      assert.ok(Math.abs(y[i] - want) <= 1e-6 * Math.abs(want), `${v * scale} / ${s}: ${y[i]}, want ${want}`);
      assert.ok(Math.abs(g[i] - k / s) <= 1e-6 * Math.abs(k / s), `gradient at ${s}: ${g[i]}, want ${k / s}`);
    });
    x.dispose();
    dx.dispose();
  }
});

gpuTest("div: the denominator's gradient -a/b² stays finite where b² over- or underflows", async () => {
  // [a, b]: -a/b² is -1e-10 (b² = 1e40 overflows f32) and -1e10 (b² = 1e-40 is denormal).
  for (const [a, b, want] of [[1e30, 1e20, -1e-10], [1e-30, 1e-20, -1e10]]) {
    const [x, y] = [fromArray([a], [1]), fromArray([b], [1])];
    const { grads: [, dy] } = grad((p, q) => sum(div(p, q)), [x, y]);
    const got = (await dy.toArray())[0];
    assert.ok(Math.abs(got - want) <= 1e-5 * Math.abs(want), `d(${a}/${b})/db = ${got}, want ${want}`);
    [x, y, dy].forEach((t) => t.dispose());
  }
});
