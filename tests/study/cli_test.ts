/**
 * `deno task train` end to end on the tiny profile: killed after one step, resumed, it runs every
 * stage and writes every report file; options and errors of the command line.
 */
import assert from "node:assert/strict";
import { pathExists } from "../../src/io/paths.ts";
import { buildProfile, fixAdapterDefaults, profileNames } from "../../src/study/config.ts";
import { checkSavedConfig, parseStages, STUDY_OPTIONS, studyConfig } from "../../src/study/options.ts";
import { missingInputs } from "../../src/study/run.ts";
import { RunFolder } from "../../src/train/run_folder.ts";
import type { StudyReport } from "../../src/study/report.ts";
import { type OptionValues, UsageError } from "../../src/train/options.ts";
import { encodeSafetensors } from "../../src/io/safetensors.ts";

async function train(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../cli/train.ts", import.meta.url).pathname, ...args],
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test({
  name: "train CLI: the tiny study, killed after one step and resumed, writes every report file",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const first = await train(["--profile", "tiny", "--out", dir, "--stop-after-steps", "1"]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /stopped after .* continue with: deno task train --resume --out/);
    assert.ok(!(await pathExists(`${dir}/stages/classifier.json`)), "the classifier stage is not complete");

    const refused = await train(["--out", dir, "--resume", "--lambda", "0.5"]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /--resume uses the saved config.json; do not pass --lambda/);

    const second = await train(["--out", dir, "--resume"]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /resumed .*classifier\.safetensors at step 1/);
    assert.match(second.stdout, /report: .*report\.md/);
    const stages = ["classifier", "at", "pretrain", "atop-fgsm-transfer", "atop-adaptive", "atop-clean"];
    for (
      const file of [
        "config.json",
        "log.jsonl",
        "report.md",
        "report.json",
        "comparison.json",
        "figure.json",
        "figure3.png",
        ...stages.map((s) => `stages/${s}.json`),
        ...stages.map((s) => `checkpoints/${s}.safetensors`),
        ...stages.map((s) => `curves/${s}.png`),
      ]
    ) {
      assert.ok(await pathExists(`${dir}/${file}`), `${file} written`);
    }
    const report = JSON.parse(await Deno.readTextFile(`${dir}/report.json`)) as StudyReport;
    assert.deepEqual(report.comparison.rows.map((r) => r.key), [
      "classifier",
      "at",
      "ap",
      "atop-fgsm-transfer",
      "atop-adaptive",
      "atop-clean",
    ]);
    for (const row of report.comparison.rows) {
      for (const column of report.comparison.columns) {
        const cell = row.cells[column.key];
        assert.ok(cell.singleDraw.mean >= 0 && cell.singleDraw.mean <= 1, `${row.key} ${column.key}`);
        assert.equal(cell.singleDraw.perSeed.length, row.random ? 2 : 1);
      }
    }
    assert.ok(report.findings.length >= 8, "findings generated");
    assert.ok(report.sanity.length > 0 && report.sanity.every((s) => s.passed !== false), "sanity verdicts");
    assert.equal(report.figureRows.length, 3 + 4, "clean, adversarial, transformed + 4 purifiers");
    const md = await Deno.readTextFile(`${dir}/report.md`);
    for (
      const text of ["## Comparison", "## Findings", "figure3.png", "curves/atop-adaptive.png", "## Sanity"]
    ) {
      assert.ok(md.includes(text), `report.md has ${text}`);
    }

    // Run again: nothing to train or evaluate, the report is rewritten from the saved results.
    const third = await train(["--out", dir, "--resume"]);
    assert.equal(third.code, 0, third.stderr);
    assert.match(third.stderr, /evaluate: done earlier/);

    // Killed during the evaluation's last row: the finished rows are read back, the last one is
    // evaluated again, and the table is the same (every batch of the protocol reseeds itself).
    for (const file of ["comparison.json", "figure.json", "figure3.png", "evaluate/atop-clean.json"]) {
      await Deno.remove(`${dir}/${file}`);
    }
    const fourth = await train(["--out", dir, "--resume"]);
    assert.equal(fourth.code, 0, fourth.stderr);
    assert.equal([...fourth.stderr.matchAll(/: done earlier \(evaluate\/[a-z-]+\.json\)/g)].length, 5);
    assert.ok(await pathExists(`${dir}/figure3.png`));
    const again = JSON.parse(await Deno.readTextFile(`${dir}/report.json`)) as StudyReport;
    // The same numbers; only the re-evaluated row's timings differ.
    const cells = (r: StudyReport) =>
      JSON.stringify(r.comparison.rows.map((row) => [row.key, row.cells]), (k, v) => k === "seconds" ? 0 : v);
    assert.equal(cells(again), cells(report));
    assert.deepEqual(again.figureRows, report.figureRows);

    // A row whose checkpoint changed since (trained again: another modification time) is not
    // read back: it is evaluated again.
    const later = new Date(Date.now() + 60_000);
    await Deno.utime(`${dir}/checkpoints/atop-adaptive.safetensors`, later, later);
    await Deno.remove(`${dir}/comparison.json`);
    const fifth = await train(["--out", dir, "--resume"]);
    assert.equal(fifth.code, 0, fifth.stderr);
    const reread = [...fifth.stderr.matchAll(/: done earlier \(evaluate\/([a-z-]+)\.json\)/g)].map((m) =>
      m[1]
    );
    assert.deepEqual(reread, ["classifier", "at", "ap", "atop-fgsm-transfer", "atop-clean"]);
  },
});

Deno.test("train CLI: --help lists profiles and options; bad options give one line and exit 2", async () => {
  const help = await train(["--help"]);
  assert.equal(help.code, 0);
  for (
    const text of [
      "--profile <default|tiny|full|cifar10-paper>",
      "--lambda <number>",
      "--resume",
      "cifar10-paper",
      "--[no-]gan",
      "dataset of every stage (default: the profile's)",
      "run folder (default: runs/atop-<date>)\n",
    ]
  ) {
    assert.ok(help.stdout.includes(text), `help mentions ${text}`);
  }
  // Profile-backed options are not "none" (they take the profile's value).
  assert.ok(!help.stdout.includes("(default: none)"), help.stdout);
  for (
    const [args, message] of [
      [["--model", "resnet9000"], /--model \(command line\): 'resnet9000' is not one of small-cnn, resnet8/],
      [["--profile", "huge"], /--profile \(command line\): 'huge' is not one of default/],
      [["--eval-points", "0"], /--eval-points \(command line\): 0 is below the minimum 1/],
      [["--lambda", "lots"], /--lambda \(command line\): 'lots' is not a number/],
      [
        ["--stages", "pretrain,finetune"],
        /--stages: 'finetune' is not one of classifier, at, pretrain, atop, evaluate/,
      ],
      [["--atop-modes", "pgd"], /--atop-modes: 'pgd' is not one of fgsm-transfer, adaptive, clean/],
      [["--atop-modes", ","], /--atop-modes: no mode given/],
      [["--stages", ","], /--stages: no stage given/],
      [["--missing", "1.5"], /--missing \(command line\): 1.5 is above the maximum 1/],
      // Checked before anything trains (it used to fail when the pretrain stage started).
      [
        ["--grid", "20"],
        /--grid \(rt2 on fashion-mnist\): a 20 x 20 grid of 2 x 2 blocks leaves empty blocks/,
      ],
      [["--frobnicate"], /Unknown option '--frobnicate'/],
      [["--eps", "-0.1"], /--eps' argument is ambiguous; give a value that starts with '-' as --flag=VALUE/],
      [["--resume"], /--resume needs --out <run folder>/],
    ] as const
  ) {
    const r = await train([...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
  }
});

Deno.test("train CLI: --resume refuses overrides and names a corrupt or incomplete config.json", async () => {
  const dir = await Deno.makeTempDir();
  const saved = { profile: "tiny", config: buildProfile("tiny"), adapter: "test" };
  const write = (value: unknown) => Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(value));
  await write(saved);
  await Deno.writeTextFile(`${dir}/override.json`, JSON.stringify({ classifierEpochs: 7 }));
  const refused = await train([
    "--out",
    dir,
    "--resume",
    "--classifier-epochs",
    "7",
    "--config",
    `${dir}/override.json`,
  ]);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /do not pass --classifier-epochs, --config .*override\.json/);

  const { epochs: _, ...classifier } = saved.config.classifier;
  await write({ ...saved, config: { ...saved.config, classifier } });
  const incomplete = await train(["--out", dir, "--resume"]);
  assert.equal(incomplete.code, 2, incomplete.stderr);
  assert.match(
    incomplete.stderr,
    /config\.json: 'config\.classifier\.epochs' is missing \(a number in profile tiny\)/,
  );

  await Deno.writeTextFile(`${dir}/config.json`, '{ "profile": "tiny", "config": { ');
  const corrupt = await train(["--out", dir, "--resume"]);
  assert.equal(corrupt.code, 1, corrupt.stderr);
  assert.match(corrupt.stderr, new RegExp(`${dir}/config\\.json: .*JSON`));
});

function values(overrides: OptionValues): OptionValues {
  const v: OptionValues = {};
  for (const [k, spec] of Object.entries(STUDY_OPTIONS)) v[k] = spec.default;
  return { ...v, ...overrides };
}

Deno.test("study options: overrides reach every stage they concern, null keeps the profile", () => {
  assert.deepEqual(studyConfig(values({})), buildProfile("default"));
  const c = studyConfig(values({
    profile: "tiny",
    dataset: "mnist",
    eps: 0.2,
    lambda: 0.3,
    atEpochs: 0,
    rt: "rt3",
    generatorWidth: 6,
    atopModes: "adaptive",
    fixedRandomness: true,
    seed: 5,
  }));
  assert.equal(c.dataset, "mnist");
  for (const s of [c.classifier, c.pretrain, c.atop]) assert.equal(s.dataset, "mnist");
  assert.equal(c.at, null, "--at-epochs 0 drops the AT row");
  assert.equal(c.atop.attack.eps, 0.2);
  assert.equal(c.evaluation.linfEps, 0.2);
  assert.equal(c.atop.lambda, 0.3);
  assert.equal(c.pretrain.rt.kind, "rt3");
  assert.deepEqual(c.atop.rt, c.pretrain.rt, "pretrain and atop share the transform");
  assert.deepEqual(c.pretrain.rt.fixedRandomness, { seed: 6 });
  assert.equal(c.atop.purifier.width, 6);
  assert.deepEqual(c.atopModes, ["adaptive"]);
  assert.equal(c.classifier.seed, 5);
  // --generator: the profile's width for the same kind, the kind's default for another.
  const tiny = buildProfile("tiny").pretrain.purifier;
  assert.deepEqual(studyConfig(values({ profile: "tiny", generator: tiny.kind })).pretrain.purifier, tiny);
  assert.deepEqual(studyConfig(values({ profile: "tiny", generator: "deepfill" })).atop.purifier, {
    kind: "deepfill",
  });
  for (const profile of profileNames()) {
    const config = studyConfig(values({ profile }));
    assert.equal(checkSavedConfig(config, "config.json"), config, `profile ${profile} passes its check`);
  }
  assert.equal(checkSavedConfig(c, "config.json"), c, "so does one with overrides");
  const other = studyConfig(values({ profile: "tiny", generator: "deepfill", rt: "rt1" }));
  assert.equal(checkSavedConfig(other, "config.json"), other, "and one with another purifier and transform");
  assert.throws(
    () =>
      checkSavedConfig({ ...other, atop: { ...other.atop, purifier: {} } } as typeof other, "config.json"),
    /'config\.atop\.purifier\.kind' is missing/,
  );
  assert.throws(
    () => checkSavedConfig({ ...c, atopModes: "adaptive" } as unknown as typeof c, "run/config.json"),
    /run\/config\.json: 'config\.atopModes' must be an array, got "adaptive"/,
  );
  assert.deepEqual(parseStages("all"), undefined);
  assert.deepEqual(parseStages("pretrain, atop"), ["pretrain", "atop"]);
  assert.throws(() => parseStages(""), /--stages: no stage given/);
  // --classifier-width sets the classifier's and the AT baseline's width.
  const wide = studyConfig(values({ classifierWidth: 3 }));
  assert.deepEqual([wide.classifier.width, wide.at?.width], [3, 3]);
  // The adapter-dependent default (DeepFill's contextual attention) is written into the config.
  for (const [adapter, attention] of [["gpu", true], ["cpu", false]] as const) {
    const paper = buildProfile("cifar10-paper");
    assert.equal(paper.pretrain.purifier.contextualAttention, undefined);
    fixAdapterDefaults(paper, adapter);
    assert.equal(paper.pretrain.purifier.contextualAttention, attention);
    assert.equal(paper.atop.purifier.contextualAttention, attention);
  }
  const coarse = buildProfile("tiny");
  fixAdapterDefaults(coarse, "gpu");
  assert.deepEqual(coarse, buildProfile("tiny"), "the coarse purifier has no such setting");
  // --classifier-normalize: the classifier's and the AT baseline's input normalisation.
  const raw = studyConfig(values({ classifierNormalize: "none" }));
  assert.deepEqual([raw.classifier.normalize, raw.at?.normalize], [{ mean: [0], std: [1] }, {
    mean: [0],
    std: [1],
  }]);
  assert.equal(studyConfig(values({})).classifier.normalize, undefined, "the dataset's by default");
  assert.throws(
    () => studyConfig(values({ classifierNormalize: "0.5/0" })),
    (e: Error) => e instanceof UsageError && /^--classifier-normalize: expected none/.test(e.message),
  );
});

Deno.test("train CLI: the inputs of the chosen stages are checked before any stage trains", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const run = new RunFolder(dir);
    const tiny = buildProfile("tiny");
    const missing = await missingInputs(tiny, run, ["atop"]);
    assert.equal(missing.length, 2, missing.join("\n"));
    assert.match(missing[0], /checkpoints\/classifier\.safetensors \(made by the classifier stage/);
    assert.match(missing[1], /checkpoints\/pretrain\.safetensors \(made by the pretrain stage\)/);
    assert.deepEqual(await missingInputs(tiny, run, ["classifier", "pretrain", "atop"]), []);
    assert.deepEqual(await missingInputs(tiny, run, undefined), []);
    // A checkpoint without its stage record is a killed stage's partial one: not an input.
    await Deno.mkdir(`${dir}/checkpoints`, { recursive: true });
    await Deno.writeFile(run.checkpointPath("pretrain"), new Uint8Array(8));
    const partial = await missingInputs(tiny, run, ["classifier", "atop"]);
    assert.deepEqual(partial.length, 1, partial.join("\n"));
    assert.match(partial[0], /pretrain\.safetensors \(made by the pretrain stage, which has not finished/);
    // The evaluate stage reads every row's stage.
    const evaluateOnly = await missingInputs(tiny, run, ["evaluate"]);
    const rows = [
      "classifier",
      ...(tiny.at ? ["at"] : []),
      "pretrain",
      ...tiny.atopModes.map((m) => `atop-${m}`),
    ];
    assert.deepEqual(
      evaluateOnly.map((m) => /checkpoints\/([a-z-]+)\.safetensors/.exec(m)?.[1]).sort(),
      rows.sort(),
      evaluateOnly.join("\n"),
    );
    // Imported weights (no metadata of ours) are read with the study's model, dataset and
    // normalisation, and reported.
    await Deno.writeFile(
      `${dir}/imported.safetensors`,
      encodeSafetensors({ "linear.bias": { dtype: "F32", shape: [1], data: new Float32Array([1]) } }),
    );
    const imported: unknown[] = [];
    const raw = studyConfig(values({ profile: "tiny", classifierNormalize: "none" }));
    await missingInputs(
      { ...raw, classifierCheckpoint: `${dir}/imported.safetensors` },
      run,
      undefined,
      (c) => imported.push([c.model, c.normalize]),
    );
    assert.deepEqual(imported, [[raw.classifier.model, { mean: [0], std: [1] }]]);
    // A given classifier checkpoint is read now: a typo fails before the stages before its use.
    await assert.rejects(
      missingInputs({ ...tiny, classifierCheckpoint: `${dir}/typo.safetensors` }, run, undefined),
      /no checkpoint at .*typo\.safetensors/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("train CLI: a run that failed before any stage started can be started again with the same command", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const args = [
      "--profile",
      "tiny",
      "--dataset",
      "cifar10",
      "--data-dir",
      `${dir}/no-data`,
      "--out",
      `${dir}/run`,
    ];
    for (const attempt of [1, 2]) {
      const r = await train(args);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /CIFAR-10: folder .*no-data does not exist/, `attempt ${attempt}: ${r.stderr}`);
    }
    // The data are checked before the run folder is made.
    assert.equal(await pathExists(`${dir}/run`), false);
    // A folder with a config.json but no stage output (a run that failed as its first stage
    // began) is started again too.
    await Deno.mkdir(`${dir}/run/stages`, { recursive: true });
    await Deno.writeTextFile(`${dir}/run/config.json`, "{}");
    const again = await train(args);
    assert.equal(again.code, 1, again.stderr);
    assert.match(again.stderr, /CIFAR-10: folder .*no-data does not exist/);
    // Once a stage has written something, the folder holds a run: --resume or another --out.
    await Deno.writeTextFile(`${dir}/run/stages/classifier.json`, "{}");
    const r = await train(args);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /already holds a run; pass --resume/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
