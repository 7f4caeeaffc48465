/**
 * The protocol on a random model (input noise): detection, defaults of the random protocol,
 * single-draw and majority-vote accuracies against a host computation from the per-draw
 * predictions and against independent runs of the model, the worst case, protocol "B", and a
 * deterministic model detected as such. The sanity checks pass for a working PGD and flag
 * deliberately broken attacks: one that returns x unchanged (the eps sweep does not fall,
 * iterative does not beat FGSM) and one that leaves the ball and the box.
 *
 * One file (one trained model per test process) to keep the suite fast.
 */
import assert from "node:assert/strict";
import { loadDataset } from "../../src/data/by_name.ts";
import {
  detectRandomness,
  EOT_ON_RANDOM,
  evaluateRobustness,
  mixSeed,
  outcomes,
  seedAttackedModel,
  uploadPoints,
} from "../../src/eval/protocol.ts";
import { randomStart } from "../../src/attacks/projection.ts";
import { full } from "../../src/ops/creation.ts";
import { manualSeed, rand } from "../../src/ops/random.ts";
import { evaluationPoints } from "../../src/eval/shard.ts";
import { argmax } from "../../src/ops/reduce_extra.ts";
import { noGrad } from "../../src/autograd/tape.ts";
import { gpuTest } from "../helpers/setup.ts";
import { noisyModel, trainedSmallClassifier } from "../attacks/toy_models.ts";
import type { AttackFn } from "../../src/attacks/types.ts";
import { resultChecks, runSanityChecks } from "../../src/eval/sanity.ts";
import { addScalar } from "../../src/ops/arithmetic.ts";
import { mapElements } from "../../src/ops/elementwise.ts";

/** Majority vote: the label has strictly more draws than any other class (a tie is no vote). */
const votesFor = (xs: number[], label: number) => {
  const counts = new Map<number, number>();
  for (const v of xs) counts.set(v, (counts.get(v) ?? 0) + 1);
  const mine = counts.get(label) ?? 0;
  return mine > 0 && [...counts].every(([v, c]) => v === label || c < mine);
};

Deno.test("outcomes: a tie in the majority vote is no correct vote, whatever the class numbers", () => {
  // 4 draws of 3 points, draw-major: point 0 ties 2-2 with a larger class, point 1 ties with a
  // smaller class, point 2 wins 3-1.
  const preds = [3, 3, 5, 5, 0, 5, 3, 0, 5, 5, 3, 1];
  assert.deepEqual(outcomes(preds, [3, 3, 5], 4), [
    { correct: 2, vote: false },
    { correct: 2, vote: false },
    { correct: 3, vote: true },
  ]);
  assert.deepEqual(outcomes([1, 2], [1, 1], 1), [{ correct: 1, vote: true }, { correct: 0, vote: false }]);
});

gpuTest("random model: single-draw and majority-vote accuracies match a host computation", async () => {
  const { model: base } = await trainedSmallClassifier({ testCount: 40 });
  const noisy = noisyModel(base, 0.1);
  const host = await loadDataset("fashion-mnist", "test");
  const points = evaluationPoints(host.labels, 24);
  const warnings: string[] = [];
  const { result } = await evaluateRobustness({
    model: noisy,
    subModel: base,
    dataset: host,
    points,
    // A small budget, so that outcomes differ between clean and attacked candidates.
    threats: [{ norm: "linf", eps: 0.02 }],
    attacks: [{ label: "PGD-3", attack: "pgd", options: { steps: 3, eot: 2 } }],
    protocols: ["S", "B"],
    draws: 7,
    batchSize: 12,
    recordPredictions: true,
    examples: 0,
    warn: (m) => warnings.push(m),
  });
  // Detected as random; the random protocol's defaults.
  assert.equal(result.randomness.random, true);
  assert.ok(result.randomness.predictionChanges > 0);
  assert.ok(warnings.some((w) => /model is random/.test(w)), warnings.join("\n"));
  assert.equal(result.config.random, true);
  assert.deepEqual(result.config.seeds, [0, 1, 2]);
  assert.equal(result.config.draws, 7);
  assert.deepEqual(result.settings.map((s) => s.protocol), ["S", "B"]);

  for (const setting of result.settings) {
    const rows = result.summary.filter((r) => r.protocol === setting.protocol);
    for (
      const [label, pick] of [
        ["clean", (p: typeof setting.runs[0]["points"][0]) => p.predictions!.clean],
        ["PGD-3", (p: typeof setting.runs[0]["points"][0]) => p.predictions!.attacks[0]!],
        ["worst case", (p: typeof setting.runs[0]["points"][0]) => p.predictions!.worst],
      ] as const
    ) {
      const row = rows.find((r) => r.label === label)!;
      const single: number[] = [], vote: number[] = [];
      for (const run of setting.runs) {
        let correct = 0, votes = 0;
        for (const p of run.points) {
          const preds = pick(p);
          assert.equal(preds.length, 7);
          correct += preds.filter((c) => c === p.label).length;
          if (votesFor(preds, p.label)) votes++;
          // Records agree with their own predictions.
        }
        single.push(correct / (7 * run.points.length));
        vote.push(votes / run.points.length);
      }
      assert.deepEqual(row.singleDraw.perSeed, single, `${setting.protocol} ${label} single`);
      assert.deepEqual(row.majority.perSeed, vote, `${setting.protocol} ${label} vote`);
      const mean = single.reduce((a, b) => a + b) / 3;
      assert.ok(Math.abs(row.singleDraw.mean - mean) < 1e-12);
      const std = Math.sqrt(single.reduce((a, b) => a + (b - mean) ** 2, 0) / 2);
      assert.ok(Math.abs(row.singleDraw.std - std) < 1e-12);
      assert.equal(row.n, 24);
    }
    // Per point: the outcome counts are the predictions' counts; the worst case took the
    // candidate with the fewest correct draws (then re-evaluated with fresh draws).
    let differing = 0;
    for (const run of setting.runs) {
      for (const p of run.points) {
        assert.equal(p.clean.correct, p.predictions!.clean.filter((c) => c === p.label).length);
        assert.equal(p.attacks[0]!.vote, votesFor(p.predictions!.attacks[0]!, p.label));
        const chosen = p.worstFrom < 0 ? p.clean : p.attacks[p.worstFrom]!;
        assert.ok(chosen.correct <= p.clean.correct && chosen.correct <= p.attacks[0]!.correct);
        // A tie between the clean image and the attack's output goes to the attack.
        if (p.attacks[0]!.correct === p.clean.correct && p.attacks[0]!.vote === p.clean.vote) {
          assert.equal(p.worstFrom, 0);
        }
        if (p.attacks[0]!.correct !== p.clean.correct) differing++;
      }
    }
    assert.ok(differing >= 3, `only ${differing} points where the attack changed the outcome`);
  }

  // Independent check of the clean single-draw accuracy: 20 fresh passes of the noisy model.
  const { x, y } = uploadPoints(host, points);
  const labels = Array.from(await y.toArray());
  let correct = 0;
  for (let r = 0; r < 20; r++) {
    const pred = noGrad(() => argmax(noisy(x), 1));
    const p = await pred.toArray();
    pred.dispose();
    correct += labels.filter((l, i) => p[i] === l).length;
  }
  x.dispose();
  y.dispose();
  const independent = correct / (20 * 24);
  const reported = result.summary.find((r) => r.protocol === "S" && r.label === "clean")!.singleDraw.mean;
  // 7·3 draws vs 20 draws of 24 points: allow a generous statistical margin.
  assert.ok(Math.abs(independent - reported) < 0.12, `independent ${independent} vs reported ${reported}`);
  // Protocol S (full-gradient EOT on the noisy model) is not weaker than B beyond noise here.
  const s = result.summary.find((r) => r.protocol === "S" && r.label === "PGD-3")!.singleDraw.mean;
  const b = result.summary.find((r) => r.protocol === "B" && r.label === "PGD-3")!.singleDraw.mean;
  assert.ok(s <= b + 0.2, `S ${s} vs B ${b}`);
});

gpuTest(
  "sequential suite on a random model: a point leaves only when no draw classifies it right",
  async () => {
    const { model: base } = await trainedSmallClassifier({ testCount: 40 });
    const host = await loadDataset("fashion-mnist", "test");
    const attacked: number[] = [];
    // Two recording 'attacks' that return x: the second sees the points the first left standing.
    const recorder = (name: string): AttackFn => {
      const fn: AttackFn = (_model, x) => {
        attacked.push(x.shape[0]);
        return mapElements(name, "a", [x]);
      };
      return fn;
    };
    const { result } = await evaluateRobustness({
      model: noisyModel(base, 0.1),
      dataset: host,
      points: evaluationPoints(host.labels, 30),
      threats: [{ norm: "linf", eps: 0.02 }],
      attacks: [{ label: "first", attack: recorder("first") }, {
        label: "second",
        attack: recorder("second"),
      }],
      protocols: ["S"],
      sequential: true,
      draws: 5,
      seeds: [0],
      examples: 0,
      warn: () => {},
    });
    const points = result.settings[0].runs[0].points;
    const standing = (o: { correct: number } | null) => o !== null && o.correct > 0;
    assert.equal(attacked[0], points.filter((p) => standing(p.clean)).length);
    assert.equal(attacked[1], points.filter((p) => standing(p.clean) && standing(p.attacks[0])).length);
    // The noise makes some points borderline: their vote fails on these draws, yet they face the
    // second attack.
    assert.ok(
      points.some((p) => p.attacks[0] && p.attacks[0].correct > 0 && !p.attacks[0].vote && p.attacks[1]),
    );
  },
);

gpuTest("Square against a random model judges candidates on 20 draws (protocol S only)", async () => {
  const { model: base } = await trainedSmallClassifier({ testCount: 40 });
  const host = await loadDataset("fashion-mnist", "test");
  const { result } = await evaluateRobustness({
    model: noisyModel(base, 0.1),
    subModel: base,
    dataset: host,
    points: evaluationPoints(host.labels, 4),
    threats: [{ norm: "linf", eps: 0.02 }],
    attacks: [
      { label: "Square", attack: "square", options: { queries: 2 } },
      { label: "Square EOT 3", attack: "square", options: { queries: 2, eot: 3 } },
    ],
    protocols: ["S", "B"],
    draws: 2,
    seeds: [0],
    examples: 0,
    warn: () => {},
  });
  const eots = result.settings.map((s) => [s.protocol, s.attacks.map((a) => a.options.eot ?? null)]);
  // S attacks the random pipeline: 20 unless set; B attacks the deterministic classifier alone.
  assert.deepEqual(eots, [["S", [EOT_ON_RANDOM, 3]], ["B", [null, 3]]]);
});

gpuTest("a deterministic model is detected as such and gets one draw and one seed", async () => {
  const { model, x } = await trainedSmallClassifier({ testCount: 40 });
  const det = await detectRandomness(model, x);
  assert.equal(det.random, false);
  assert.equal(det.maxLogitChange, 0);
  const host = await loadDataset("fashion-mnist", "test");
  const { result } = await evaluateRobustness({
    model,
    dataset: host,
    points: evaluationPoints(host.labels, 10),
    threats: [{ norm: "linf", eps: 0.1 }],
    attacks: [{ label: "FGSM", attack: "fgsm" }],
    examples: 0,
    warn: () => {},
  });
  assert.equal(result.config.random, false);
  assert.equal(result.config.draws, 1);
  assert.deepEqual(result.config.seeds, [0]);
  for (const p of result.settings[0].runs[0].points) {
    assert.equal(p.worst.correct, Math.min(p.clean.correct, p.attacks[0]!.correct));
  }
  // Single-draw and majority coincide for one draw.
  for (const r of result.summary) assert.equal(r.singleDraw.mean, r.majority.mean);
  await assert.rejects(
    () =>
      evaluateRobustness({
        model,
        dataset: host,
        points: evaluationPoints(host.labels, 4),
        threats: [{ norm: "linf", eps: 0.1 }],
        attacks: [],
        protocols: ["B"],
      }),
    /subModel/,
  );
});

/** The broken attack: returns a copy of x (a new tensor, as the contract requires). */
const identity: AttackFn = (_model, x) => mapElements("identityAttack", "a", [x]);

gpuTest("sanity experiments: a working PGD passes, an identity 'attack' is flagged", async () => {
  const { model, x, y } = await trainedSmallClassifier({ testCount: 40 });
  const threat = { norm: "linf" as const, eps: 0.1 };
  const common = { blackBox: null, randomSearch: 3, steps: [2, 6] as [number, number], warn: () => {} };

  const good = await runSanityChecks(model, x, y, threat, { ...common, iterativeOptions: { steps: 10 } });
  const byName = (r: typeof good, name: string) => r.checks.find((c) => c.name === name)!;
  assert.equal(
    byName(good, "eps sweep falls to ~0").passed,
    true,
    byName(good, "eps sweep falls to ~0").detail,
  );
  assert.equal(byName(good, "iterative beats single-step").passed, true);
  assert.equal(byName(good, "more steps never help the defence").passed, true);
  assert.equal(byName(good, "white-box beats Square").passed, null); // skipped
  assert.equal(good.passed, true, JSON.stringify(good.checks, null, 1));

  const warnings: string[] = [];
  const bad = await runSanityChecks(model, x, y, threat, {
    ...common,
    iterative: identity,
    warn: (m) => warnings.push(m),
  });
  assert.equal(bad.passed, false);
  assert.equal(byName(bad, "eps sweep falls to ~0").passed, false);
  assert.equal(byName(bad, "iterative beats single-step").passed, false);
  assert.ok(warnings.some((w) => w.startsWith("iterative beats single-step")), warnings.join("\n"));
  // JSON verdict.
  const verdict = JSON.parse(JSON.stringify(bad));
  assert.equal(verdict.checks.length, bad.checks.length);
});

gpuTest("evaluation bound checks flag attacks leaving the ball or the box; ordering checks", async () => {
  const { model } = await trainedSmallClassifier({ testCount: 40 });
  const host = await loadDataset("fashion-mnist", "test");
  const outside: AttackFn = (_m, x) => addScalar(x, 0.3); // leaves both the 0.1-ball and [0, 1]
  const warnings: string[] = [];
  const { result } = await evaluateRobustness({
    model,
    dataset: host,
    points: evaluationPoints(host.labels, 16),
    threats: [{ norm: "linf", eps: 0.1 }],
    attacks: [
      { label: "FGSM", attack: "fgsm" },
      { label: "PGD-broken", attack: identity },
      { label: "outside", attack: outside },
    ],
    examples: 0,
    warn: (m) => warnings.push(m),
  });
  const check = (name: string) => result.sanity.find((c) => c.name === name)!;
  assert.equal(check("bounds S linf 0.1 FGSM").passed, true, check("bounds S linf 0.1 FGSM").detail);
  assert.equal(check("bounds S linf 0.1 PGD-broken").passed, true);
  const out = check("bounds S linf 0.1 outside");
  assert.equal(out.passed, false);
  assert.ok((out.values!.maxNormRatio as number) > 2.9 && (out.values!.maxValue as number) > 1);
  assert.ok(warnings.some((w) => /outside/.test(w)));
  // A function attack has no registry name, so the ordering check uses registry names only:
  // relabel the broken one as "pgd" and recompute.
  result.settings[0].attacks[1].attack = "pgd";
  const ordering = resultChecks(result).find((c) => c.name.startsWith("iterative beats single-step"))!;
  assert.equal(ordering.passed, false, ordering.detail);
});

gpuTest("protocol: a random defence's noise during an attack is not the attack's own start", async () => {
  // The attack draws its start from (attackSeed, restart); the defence draws from the default
  // generator, which seedAttackedModel keys apart. Seeded alike, the two would be the same bits.
  const attackSeed = mixSeed(7, 0, 1);
  const shape = [4, 3, 8, 8];
  const x = full(shape, 0.5); // start = 0.5 + U(-0.5, 0.5), nothing clipped
  const start = await randomStart(x, { norm: "linf", eps: 0.5 }, attackSeed, { stream: 0 }).toArray();
  const matching = async () => {
    const noise = await rand(shape, { low: -0.5, high: 0.5 }).toArray();
    return start.filter((v, i) => Math.abs(v - 0.5 - noise[i]) < 1e-6).length;
  };
  seedAttackedModel(attackSeed);
  const same = await matching();
  assert.ok(same < 8, `${same} of ${start.length} elements of the start equal the defence's noise`);
  manualSeed(attackSeed); // the old seeding, for contrast: every element equal
  assert.equal(await matching(), start.length);
  x.dispose();
});
