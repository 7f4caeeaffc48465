import assert from "node:assert/strict";
import {
  dlrLoss,
  kthLargestOtherClass,
  marginLoss,
  perSampleCrossEntropy,
  targetedDlrLoss,
} from "../../src/attacks/losses.ts";
import { grad } from "../../src/autograd/backward.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { checkOp } from "../helpers/check_op.ts";
import { assertClose, type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

// ---- float64 references ----

/** Classes of a row sorted by logit, descending; ties: lower class first (as the kernel). */
function order(z: ArrayLike<number>): number[] {
  return Array.from(z, (_, i) => i).sort((a, b) => z[b] - z[a] || a - b);
}

type Kind = "margin" | "dlr" | "dlr-targeted";

/** Loss of one row and its gradient w.r.t. the row's logits (on the piece the tie rule picks). */
function rowLoss(kind: Kind, z: Float64Array, y: number, t: number): { value: number; grad: Float64Array } {
  const g = new Float64Array(z.length);
  if (y < 0 || y >= z.length || (kind === "dlr-targeted" && (t < 0 || t >= z.length))) {
    return { value: NaN, grad: g.fill(NaN) };
  }
  const pi = order(z);
  const m = pi[0] === y ? pi[1] : pi[0];
  if (kind === "margin") {
    g[y] += 1;
    g[m] -= 1;
    return { value: z[y] - z[m], grad: g };
  }
  const other = kind === "dlr" ? m : t;
  const num = z[y] - z[other];
  const den = kind === "dlr" ? z[pi[0]] - z[pi[2]] + 1e-12 : z[pi[0]] - (z[pi[2]] + z[pi[3]]) / 2 + 1e-12;
  const q = num / (den * den);
  g[y] -= 1 / den;
  g[other] += 1 / den;
  g[pi[0]] += q;
  if (kind === "dlr") g[pi[2]] -= q;
  else {
    g[pi[2]] -= q / 2;
    g[pi[3]] -= q / 2;
  }
  return { value: -num / den, grad: g };
}

function lossRef(kind: Kind, logits: Nd, y: number[], t: number[] = []): Nd {
  const [n, k] = logits.shape;
  const out = nd([n]);
  for (let r = 0; r < n; r++) {
    out.data[r] = rowLoss(kind, logits.data.subarray(r * k, r * k + k), y[r], t[r]).value;
  }
  return out;
}

function lossGradRef(kind: Kind, dy: Nd, logits: Nd, y: number[], t: number[] = []): Nd {
  const [n, k] = logits.shape;
  const dx = nd([n, k]);
  for (let r = 0; r < n; r++) {
    const g = rowLoss(kind, logits.data.subarray(r * k, r * k + k), y[r], t[r]).grad;
    for (let j = 0; j < k; j++) dx.data[r * k + j] = g[j] * dy.data[r];
  }
  return dx;
}

/** Logits whose values are at least ~0.25 apart (finite differences stay on one piece). */
function separatedLogits(rng: Rng, n: number, k: number): Nd {
  const x = nd([n, k]);
  for (let r = 0; r < n; r++) {
    const perm = order(Array.from({ length: k }, () => rng.next()));
    for (let j = 0; j < k; j++) x.data[r * k + j] = perm[j] * 0.37 - k * 0.15 + rng.uniform(-0.05, 0.05);
  }
  return x;
}

function labelsFor(rng: Rng, logits: Nd): number[] {
  const [n, k] = logits.shape;
  // Half the rows labelled with their argmax (correctly classified), half at random.
  return Array.from(
    { length: n },
    (_, r) => r % 2 === 0 ? order(logits.data.subarray(r * k, r * k + k))[0] : rng.int(0, k - 1),
  );
}

function targetsFor(rng: Rng, y: number[], k: number): number[] {
  return y.map((label) => (label + rng.int(1, k - 1)) % k);
}

const i32 = (values: number[]) => fromArray(Int32Array.from(values), [values.length], "i32");

// ---- tests ----

gpuTest("attack losses: margin, DLR and targeted DLR vs float64 references (K = 3, 4, 5, 10)", async () => {
  const rng = new Rng(11);
  const cases: [Kind, number, number][] = [
    ["margin", 2, 3],
    ["margin", 7, 10],
    ["dlr", 1, 3],
    ["dlr", 6, 3],
    ["dlr", 5, 4],
    ["dlr", 9, 10],
    ["dlr-targeted", 1, 4],
    ["dlr-targeted", 6, 4],
    ["dlr-targeted", 5, 5],
    ["dlr-targeted", 9, 10],
  ];
  for (const [kind, n, k] of cases) {
    const logits = separatedLogits(rng, n, k);
    const y = labelsFor(rng, logits);
    const t = targetsFor(rng, y, k);
    const yT = i32(y), tT = i32(t);
    const fn = kind === "margin"
      ? (z: Parameters<typeof marginLoss>[0]) => marginLoss(z, yT)
      : kind === "dlr"
      ? (z: Parameters<typeof dlrLoss>[0]) => dlrLoss(z, yT)
      : (z: Parameters<typeof dlrLoss>[0]) => targetedDlrLoss(z, yT, tT);
    await checkOp({
      name: `${kind} [${n}, ${k}]`,
      inputs: [logits],
      gpu: fn,
      ref: (z) => lossRef(kind, z, y, t),
      refGrad: (dy, z) => [lossGradRef(kind, dy, z, y, t)],
      tol: { rtol: 1e-4, atol: 1e-5 },
      fdSamples: 40,
    });
    yT.dispose();
    tT.dispose();
  }
});

gpuTest("attack losses: ties in the top four pick the lower class (forward and gradient)", async () => {
  // Rows with ties at pi1/pi2, pi2/pi3, pi3/pi4 and across y; finite differences are
  // ill-defined on ties, so the GPU gradient is compared with the reference's tie rule only.
  const k = 6;
  const rows = [
    [2, 2, 1, 0, -1, -2], // y = 0 tied with class 1 at the top
    [1, 3, 3, 0.5, 0.5, 0.5], // tie at the top (not y), tie among pi3..pi5
    [0, 1, 2, 2, 2, -1], // three-way tie pi1..pi3: DLR denominator is 1e-12 (large loss)
    [5, 4, 3, 3, 3, 3], // tie at pi3, pi4 and beyond
    [1, 1, 1, 1, 1, 1], // all equal
  ];
  const logits = nd([rows.length, k], rows.flat());
  const y = [0, 3, 4, 1, 2];
  const t = [1, 2, 0, 5, 3];
  const yT = i32(y), tT = i32(t);
  for (const kind of ["margin", "dlr", "dlr-targeted"] as Kind[]) {
    const fn = (z: Parameters<typeof dlrLoss>[0]) =>
      kind === "margin" ? marginLoss(z, yT) : kind === "dlr" ? dlrLoss(z, yT) : targetedDlrLoss(z, yT, tT);
    // Rows with a zero denominator give losses of order 1e12: compare those relatively.
    await checkOp({
      name: `${kind} ties`,
      inputs: [logits],
      gpu: fn,
      ref: (z) => lossRef(kind, z, y, t),
      tol: { rtol: 1e-3, atol: 1e-5 },
    });
    const z = fromArray(Float32Array.from(logits.data), logits.shape);
    const dy = nd([rows.length], [1, -0.5, 0.25, 2, -1]);
    const dyT = fromArray(Float32Array.from(dy.data), dy.shape);
    const { value, grads } = grad((a) => fn(a), [z], dyT);
    assertClose(
      await grads[0].toArray(),
      lossGradRef(kind, dy, logits, y, t).data,
      `${kind} ties: gradient`,
      {
        rtol: 1e-3,
        atol: 1e-5,
      },
    );
    [z, dyT, value, ...grads].forEach((x) => x.dispose());
  }
  yT.dispose();
  tT.dispose();
});

gpuTest("attack losses: invalid labels give NaN rows; cross-entropy per sample", async () => {
  const rng = new Rng(5);
  const logits = separatedLogits(rng, 4, 5);
  const y = [1, -1, 7, 4], t = [0, 2, 3, 9];
  const yT = i32(y), tT = i32(t);
  await checkOp({
    name: "dlr invalid",
    inputs: [logits],
    gpu: (z) => dlrLoss(z, yT),
    ref: (z) => lossRef("dlr", z, y),
  });
  await checkOp({
    name: "targeted invalid",
    inputs: [logits],
    gpu: (z) => targetedDlrLoss(z, yT, tT),
    ref: (z) => lossRef("dlr-targeted", z, y, t),
  });
  const yOk = [1, 0, 3, 4], yOkT = i32(yOk);
  await checkOp({
    name: "perSampleCrossEntropy",
    inputs: [logits],
    gpu: (z) => perSampleCrossEntropy(z, yOkT),
    ref: (z) => {
      const out = nd([4]);
      for (let r = 0; r < 4; r++) {
        const row = z.data.subarray(r * 5, r * 5 + 5);
        const m = Math.max(...row);
        out.data[r] = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0)) - row[yOk[r]];
      }
      return out;
    },
    refGrad: (dy, z) => {
      const dx = nd([4, 5]);
      for (let r = 0; r < 4; r++) {
        const row = z.data.subarray(r * 5, r * 5 + 5);
        const m = Math.max(...row);
        const s = row.reduce((a, v) => a + Math.exp(v - m), 0);
        for (let j = 0; j < 5; j++) {
          dx.data[r * 5 + j] = (Math.exp(row[j] - m) / s - (j === yOk[r] ? 1 : 0)) * dy.data[r];
        }
      }
      return [dx];
    },
  });
  [yT, tT, yOkT].forEach((x) => x.dispose());
});

gpuTest("attack losses: clear errors for too few classes and bad labels", () => {
  const z2 = fromArray(new Float32Array(6), [3, 2]);
  const z3 = fromArray(new Float32Array(9), [3, 3]);
  const y3 = i32([0, 1, 0]);
  assert.throws(() => dlrLoss(z2, y3), /dlrLoss.*at least 3 classes.*K = 2/);
  assert.throws(() => targetedDlrLoss(z3, y3, y3), /targetedDlrLoss.*at least 4 classes.*K = 3/);
  assert.throws(
    () => marginLoss(z3, fromArray(new Float32Array(3), [3])),
    /marginLoss.*labels must be i32 \[3\]/,
  );
  assert.throws(() => dlrLoss(z3, i32([0, 1])), /labels must be i32 \[3\]/);
  assert.throws(() => dlrLoss(fromArray(new Float32Array(9), [9]), y3), /logits must be \[N, K\]/);
  const z4 = fromArray(new Float32Array(12), [3, 4]);
  assert.throws(() => targetedDlrLoss(z4, y3, i32([1])), /targets must be i32 \[3\]/);
  assert.throws(() => kthLargestOtherClass(z4, y3, 4), /rank must be an integer in \[1, 3\]/);
  [z2, z3, y3, z4].forEach((x) => x.dispose());
});

gpuTest("kthLargestOtherClass: APGD-T's targets by rank among the non-true classes (with ties)", async () => {
  const rng = new Rng(3);
  const n = 7, k = 10;
  const logits = separatedLogits(rng, n, k);
  // Add ties: row 0 all equal, row 1 a tie including the true class.
  for (let j = 0; j < k; j++) logits.data[j] = 0.5;
  logits.data[k + 2] = logits.data[k + 5];
  const y = labelsFor(rng, logits);
  y[1] = 5;
  y[2] = -1;
  const z = fromArray(Float32Array.from(logits.data), logits.shape);
  const yT = i32(y);
  for (let rank = 1; rank <= k - 1; rank++) {
    const got = Array.from(await kthLargestOtherClass(z, yT, rank).toArray());
    const want = y.map((label, r) => {
      if (label < 0 || label >= k) return -1;
      const zr = Float32Array.from(logits.data.subarray(r * k, r * k + k));
      return order(zr).filter((c) => c !== label)[rank - 1];
    });
    assert.deepEqual(got, want, `rank ${rank}`);
  }
  z.dispose();
  yT.dispose();
});
