/**
 * Summary rows from per-point records (no GPU): a deterministic model's attack row counts a
 * point robust only if its clean image is right too; a random model's keeps the attack's own
 * outcome; ms per point divides by the points an attack ran on.
 */
import assert from "node:assert/strict";
import type { EvalResult, Outcome, PointRecord } from "../../src/eval/protocol.ts";
import { detailTable, summarize } from "../../src/eval/report.ts";

const o = (correct: number, vote = correct > 0): Outcome => ({ correct, vote });

function result(random: boolean, points: PointRecord[], attacked = points.length): EvalResult {
  const stats = { points: attacked, seconds: 2, maxNormRatio: 1, minValue: 0, maxValue: 1, nonFinite: 0 };
  return {
    format: "atop-robust-eval/1",
    config: {
      model: "m",
      dataset: "d",
      points: points.length,
      limit: null,
      batchSize: 2,
      draws: random ? 3 : 1,
      random,
      seeds: [0],
      sequential: false,
      shard: null,
    },
    randomness: { random, passes: 5, points: 2, predictionChanges: 0, maxLogitChange: 0, source: "given" },
    settings: [{
      protocol: "S",
      threat: { norm: "linf", eps: 0.1 },
      attacks: [{ label: "FGSM", attack: "fgsm", options: {}, bound: "norm" }],
      runs: [{ seed: 0, points, attackStats: [stats], cleanSeconds: 0 }],
    }],
    summary: [],
    seconds: 0,
    sanity: [],
  } as unknown as EvalResult;
}

const point = (position: number, clean: Outcome, attack: Outcome): PointRecord => ({
  position,
  index: position,
  label: 0,
  clean,
  attacks: [attack],
  worst: clean.correct <= attack.correct ? clean : attack,
  worstFrom: clean.correct <= attack.correct ? -1 : 0,
});

Deno.test("summary: an attack row never counts a deterministic model's wrong clean point as robust", () => {
  // Point 0 is wrong when clean and right after the attack; point 1 right, then broken.
  const det = summarize(result(false, [point(0, o(0), o(1)), point(1, o(1), o(0))]));
  const fgsm = det.find((r) => r.label === "FGSM")!;
  assert.equal(fgsm.singleDraw.mean, 0, "neither point is robust (it read 0.5)");
  assert.deepEqual(fgsm.perPoint, [0, 0]);
  assert.equal(det.find((r) => r.label === "clean")!.singleDraw.mean, 0.5);
  // A random model keeps the attack's own outcome (drawn apart from the clean one).
  const rnd = summarize(result(true, [point(0, o(1), o(3)), point(1, o(3), o(0))]));
  assert.equal(rnd.find((r) => r.label === "FGSM")!.singleDraw.mean, 0.5);
});

Deno.test("detail table: ms per point counts the points the attack ran on", () => {
  const r = result(false, [point(0, o(1), o(0)), point(1, o(1), o(1)), point(2, o(0), o(0))], 2);
  r.summary = summarize(r);
  const line = detailTable(r).split("\n").find((l) => l.includes("FGSM"))!;
  assert.match(line, /\| 1000\.0 +\|$/, line);
});
