import assert from "node:assert/strict";
import { fromArray } from "../../src/ops/creation.ts";
import { correctCount, correctPredictions } from "../../src/ops/metrics.ts";
import { Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

gpuTest("correctPredictions/correctCount vs a host reference (first maximum on ties)", async () => {
  const rng = new Rng(3);
  for (const [n, k] of [[1, 1], [5, 3], [300, 10], [7, 1000]]) {
    const logits = Float32Array.from({ length: n * k }, () => Math.round(rng.uniform(-3, 3)));
    const labels = Int32Array.from({ length: n }, () => rng.int(0, k - 1));
    const expected: number[] = Array.from({ length: n }, (_, i) => {
      const row = logits.subarray(i * k, (i + 1) * k);
      return row.indexOf(Math.max(...row)) === labels[i] ? 1 : 0 as number;
    });
    const l = fromArray(logits, [n, k]), y = fromArray(labels);
    assert.deepEqual([...await correctPredictions(l, y).toArray()], expected, `[${n}, ${k}]`);
    assert.equal(await correctCount(l, y).item(), expected.reduce((a, b) => a + b, 0));
  }
  assert.throws(
    () => correctCount(fromArray([1, 2], [1, 2]), fromArray([0])),
    /labels must be i32 \[1\], got f32\[1\]/,
  );
});

gpuTest(
  "correctPredictions: a NaN logit is the maximum, as in argmax (a diverged row is not right)",
  async () => {
    const logits = fromArray([1, NaN, 0, 5, 1, 2, NaN, 0, 9], [3, 3]);
    const labels = fromArray(Int32Array.from([0, 0, 0]));
    assert.deepEqual([...await correctPredictions(logits, labels).toArray()], [0, 1, 1]);
  },
);
