/**
 * Sharding: the batch plan, and a sharded evaluation merged equals an unsharded run exactly
 * (per-point records, accuracies and the adversarial examples themselves), for contiguous and
 * strided shards. Reports: result.json (round-trips), result.md (the table), the adversarial
 * examples as safetensors (f32, within the ball) and a PNG grid of the right size.
 */
import assert from "node:assert/strict";
import type { AttackEntry } from "../../src/attacks/registry.ts";
import { loadDataset } from "../../src/data/by_name.ts";
import { type EvalResult, evaluateRobustness } from "../../src/eval/protocol.ts";
import { evaluationPoints, mergeResults, parseShard, planBatches } from "../../src/eval/shard.ts";
import { gpuTest } from "../helpers/setup.ts";
import { trainedSmallClassifier } from "../attacks/toy_models.ts";
import { join } from "node:path";
import { decodeSafetensors } from "../../src/io/safetensors.ts";
import { accuracyTable, exampleGrid, threatLabel, writeEvaluationReport } from "../../src/eval/report.ts";

Deno.test("parseShard and planBatches split batches into disjoint, covering shards", () => {
  assert.deepEqual(parseShard("1/3"), { index: 1, count: 3, mode: "contiguous" });
  assert.throws(() => parseShard("3/3"), /0 <= i < n/);
  assert.throws(() => parseShard("a/3"), /i\/n/);
  const all = planBatches(43, 5);
  assert.equal(all.length, 9);
  assert.deepEqual(all[8], { batch: 8, start: 40, end: 43 });
  for (const mode of ["contiguous", "strided"] as const) {
    const seen: number[] = [];
    for (let i = 0; i < 4; i++) {
      seen.push(...planBatches(43, 5, { index: i, count: 4, mode }).map((b) => b.batch));
    }
    assert.deepEqual(seen.sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8], mode);
  }
  assert.deepEqual(planBatches(43, 5, { index: 1, count: 4, mode: "strided" }).map((b) => b.batch), [1, 5]);
  assert.deepEqual(planBatches(43, 5, { index: 1, count: 4, mode: "contiguous" }).map((b) => b.batch), [
    2,
    3,
  ]);
});

/** Records without timings (which differ between runs). */
function records(r: EvalResult) {
  return r.settings.map((s) => s.runs.map((run) => run.points));
}

gpuTest("a sharded evaluation merged equals the unsharded run", async () => {
  const { model } = await trainedSmallClassifier({ testCount: 40 });
  const host = await loadDataset("fashion-mnist", "test");
  const points = evaluationPoints(host.labels, 40);
  const attacks: AttackEntry[] = [
    { label: "FGSM", attack: "fgsm" },
    { label: "PGD-5", attack: "pgd", options: { steps: 5 } }, // random start: seeded per batch
  ];
  const base = {
    model,
    dataset: host,
    points,
    threats: [{ norm: "linf" as const, eps: 0.05 }, { norm: "l2" as const, eps: 1 }],
    attacks,
    batchSize: 8,
    random: false,
    seeds: [3],
    limit: 40,
    examples: 40, // host copies of every x_adv: compared bit for bit below
  };
  const wholeOutput = await evaluateRobustness(base);
  const whole = wholeOutput.result;
  /** position -> PGD x_adv rows of the first setting. */
  const advByPosition = (out: typeof wholeOutput) => {
    const set = out.examples[0], d = 28 * 28;
    return new Map(set.positions.map((p, k) => [p, set.adversarial["PGD-5"].slice(k * d, (k + 1) * d)]));
  };
  const wholeAdv = advByPosition(wholeOutput);
  assert.equal(whole.settings[0].runs[0].points.length, 40);
  // The attacks do something on this model (else the test proves little).
  const clean = whole.summary.find((r) => r.label === "clean")!.majority.mean;
  const pgdAcc = whole.summary.find((r) => r.label === "PGD-5")!.majority.mean;
  assert.ok(pgdAcc < clean - 0.1, `PGD ${pgdAcc} vs clean ${clean}`);

  for (const mode of ["contiguous", "strided"] as const) {
    const shards: EvalResult[] = [];
    for (let i = 0; i < 3; i++) {
      const out = await evaluateRobustness({ ...base, shard: { index: i, count: 3, mode } });
      shards.push(JSON.parse(JSON.stringify(out.result))); // as read back from result.json
      for (const [p, adv] of advByPosition(out)) {
        assert.deepEqual(adv, wholeAdv.get(p), `x_adv of point ${p}`);
      }
    }
    assert.ok(shards.every((s) => s.settings[0].runs[0].points.length < 40));
    const merged = mergeResults([shards[2], shards[0], shards[1]]);
    assert.deepEqual(records(merged), JSON.parse(JSON.stringify(records(whole))), mode);
    assert.deepEqual(
      merged.summary.map((r) => [r.label, r.n, r.majority.mean, r.singleDraw.mean]),
      whole.summary.map((r) => [r.label, r.n, r.majority.mean, r.singleDraw.mean]),
    );
    assert.equal(merged.config.shard, null);
    if (mode === "contiguous") {
      assert.throws(() => mergeResults([shards[0], shards[0]]), /appears in two shards/);
      // A forgotten shard is an error that names it; --allow-partial merges what is there.
      assert.throws(
        () => mergeResults([shards[0], shards[2]]),
        /the shards cover \d+ of 40 points \(shard 1\/3 missing\); .*--allow-partial/,
      );
      assert.throws(() => mergeResults([shards[1]]), /\(shards 0\/3, 2\/3 missing\)/);
      const partial = mergeResults([shards[2], shards[0]], { allowPartial: true });
      const covered = shards[0].settings[0].runs[0].points.length +
        shards[2].settings[0].runs[0].points.length;
      assert.equal(partial.settings[0].runs[0].points.length, covered);
      assert.equal(partial.summary.find((r) => r.label === "clean")!.n, covered);
      const other = JSON.parse(JSON.stringify(shards[1]));
      other.config.batchSize = 4;
      assert.throws(
        () => mergeResults([shards[0], other]),
        /result 1 was made with a different configuration than result 0: batchSize \(4 vs \d+\)/,
      );
      // With a model key (the weights' hash), a copy of the checkpoint elsewhere is the same
      // model, and other weights at the same path are not.
      const keyed = (r: typeof shards[0], model: string, modelKey: string) => {
        const copy = JSON.parse(JSON.stringify(r));
        copy.config = { ...copy.config, model, modelKey };
        return copy;
      };
      const partial2 = { allowPartial: true }; // two of the three shards: enough for the key rule
      mergeResults(
        [keyed(shards[0], "a.safetensors", "k1"), keyed(shards[1], "b.safetensors", "k1")],
        partial2,
      );
      assert.throws(
        () =>
          mergeResults(
            [keyed(shards[0], "a.safetensors", "k1"), keyed(shards[1], "a.safetensors", "k2")],
            partial2,
          ),
        /different configuration than result 0: model \("k2" vs "k1"\)/,
      );
    }
  }
});

Deno.test("threatLabel writes eps as k/255 for linf when it is one", () => {
  assert.equal(threatLabel({ norm: "linf", eps: 8 / 255 }), "linf 8/255");
  assert.equal(threatLabel({ norm: "linf", eps: 0.1 }), "linf 0.1");
  assert.equal(threatLabel({ norm: "l2", eps: 2 }), "l2 2");
});

gpuTest("writeEvaluationReport writes JSON, Markdown, safetensors and a PNG grid", async () => {
  const { model } = await trainedSmallClassifier({ testCount: 40 });
  const host = await loadDataset("fashion-mnist", "test");
  const output = await evaluateRobustness({
    model,
    dataset: host,
    points: evaluationPoints(host.labels, 12),
    threats: [{ norm: "linf", eps: 0.1 }, { norm: "l2", eps: 1.5 }],
    attacks: [{ label: "FGSM", attack: "fgsm" }, { label: "PGD-4", attack: "pgd", options: { steps: 4 } }],
    batchSize: 5,
    examples: 6,
    warn: () => {},
  });
  assert.equal(output.examples.length, 2);
  assert.equal(output.examples[0].positions.length, 6);

  const dir = await Deno.makeTempDir({ prefix: "eval-report-" });
  try {
    const written = await writeEvaluationReport(dir, output, { title: "test report" });
    const json = JSON.parse(await Deno.readTextFile(join(dir, "result.json")));
    assert.deepEqual(json.summary, JSON.parse(JSON.stringify(output.result.summary)));

    const md = await Deno.readTextFile(written.markdown);
    assert.match(md, /^# test report/);
    assert.match(md, /\| attack +\| linf 0\.1 acc % +\| l2 1\.5 acc %/);
    assert.match(md, /\| PGD-4 /);
    assert.match(md, /worst case/);
    assert.ok(md.includes(accuracyTable(output.result)));

    const st = decodeSafetensors(await Deno.readFile(written.examples!));
    assert.deepEqual(st.tensors.get("clean")!.shape, [6, 1, 28, 28]);
    assert.deepEqual(Array.from(st.tensors.get("labels")!.data), output.examples[0].labels);
    const clean = st.tensors.get("clean")!.data;
    const adv = st.tensors.get("S-linf-0.1/PGD-4")!;
    assert.equal(adv.dtype, "F32");
    let maxDelta = 0;
    for (let i = 0; i < clean.length; i++) maxDelta = Math.max(maxDelta, Math.abs(adv.data[i] - clean[i]));
    assert.ok(maxDelta <= 0.1 + 1e-6 && maxDelta > 0.05, `max |δ| ${maxDelta}`);
    assert.ok(st.tensors.has("S-l2-1.5/FGSM"));

    assert.equal(written.grids.length, 2);
    const png = await Deno.readFile(written.grids[0]);
    assert.deepEqual(Array.from(png.subarray(1, 4)), [80, 78, 71]); // "PNG"
    const view = new DataView(png.buffer, png.byteOffset);
    // 6 columns, 3 rows (clean, adversarial, |δ|) of 28·2 px with 2 px padding.
    assert.equal(view.getUint32(16), 6 * 56 + 7 * 2);
    assert.equal(view.getUint32(20), 3 * 56 + 4 * 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  // |δ| row is normalised to a maximum of 1.
  const { image, magnification } = exampleGrid(output.examples[0], ["PGD-4"], { cols: 6, scale: 1 });
  assert.equal(image.width, 6 * 28 + 7 * 2);
  assert.ok(Math.abs(magnification["PGD-4"] - 10) < 0.5, `k = ${magnification["PGD-4"]}`);
});
