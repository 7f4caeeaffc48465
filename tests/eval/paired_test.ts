/**
 * Paired comparison of two rows on the same points (src/eval/sanity.ts pairedDifference) and
 * its use by the study's findings: known values, skipped points left out, and a difference
 * that two independent means cannot resolve on 100 points but the paired test can.
 */
import assert from "node:assert/strict";
import { noiseTolerance, pairedDifference } from "../../src/eval/sanity.ts";

Deno.test("pairedDifference: mean and 2·sd/√n + 1/n of the per-point differences", () => {
  const a = [1, 1, 0.5, 0, null, 1];
  const b = [1, 0, 0.5, 0, 1, 0.5];
  const r = pairedDifference(a, b);
  // Differences over the 5 points present in both: 0, 1, 0, 0, 0.5.
  const d = [0, 1, 0, 0, 0.5];
  const mean = 0.3;
  const sd = Math.sqrt(d.reduce((s, v) => s + (v - mean) ** 2, 0) / 4);
  assert.equal(r.n, 5);
  assert.ok(Math.abs(r.diff - mean) < 1e-12);
  assert.ok(Math.abs(r.tolerance - (2 * sd / Math.sqrt(5) + 1 / 5)) < 1e-12);
  assert.ok(Number.isNaN(pairedDifference([null], [1]).diff));
});

Deno.test("pairedDifference: resolves a 10-point gain on 100 shared points that unpaired noise hides", () => {
  // Row b is right on 60 points; row a on the same 60 plus 10 more.
  const b = Array.from({ length: 100 }, (_, i) => (i < 60 ? 1 : 0));
  const a = Array.from({ length: 100 }, (_, i) => (i < 70 ? 1 : 0));
  const paired = pairedDifference(a, b);
  assert.ok(Math.abs(paired.diff - 0.1) < 1e-12);
  assert.ok(paired.diff > paired.tolerance, `paired: +10 points vs noise ${paired.tolerance}`);
  assert.ok(0.1 < noiseTolerance(0.7, 0.6, 100), "two independent means cannot resolve it");
  // Identical rows: no difference, and only the 1/n discreteness term as noise.
  const same = pairedDifference(a, a);
  assert.equal(same.diff, 0);
  assert.equal(same.tolerance, 0.01);
});
