/**
 * `deno task attack`: robust evaluation of a trained classifier.
 *
 *   deno task attack --checkpoint <ckpt> --attack apgd-ce --norm linf --eps 8/255 [--steps --eot ...]
 *   deno task attack --checkpoint <ckpt> --suite fmnist --limit 500 --out runs/eval-fmnist
 *   deno task attack --checkpoint <ckpt> --suite aa-rand --input-noise 0.1 --shard 0/4 --out shard0
 *   deno task attack merge shard0/result.json shard1/result.json ... --out merged
 *
 * Model loading as in cli/eval.ts: the architecture from the checkpoint's metadata, or
 * --model/--dataset for foreign weights. `--input-noise sigma` wraps the classifier in a toy
 * random defence f(x + sigma·n) (fresh n per call): the random-defence protocol then applies,
 * and protocol "B" attacks f alone.
 */
import {
  type AttackEntry,
  attackLabel,
  attackNames,
  getAttack,
  getSuite,
  suiteNames,
  suiteThreats,
} from "../src/attacks/registry.ts";
import type { Model, Norm, ThreatModel } from "../src/attacks/types.ts";
import { loadDataset } from "../src/data/by_name.ts";

import { initWebGpu } from "../src/device/runtime.ts";
import { loadIntoTensors } from "../src/io/checkpoint.ts";
import { writeFileAtomic } from "../src/io/atomic.ts";
import { parseJson } from "../src/io/json.ts";
import { writeJson } from "../src/io/report.ts";

import { add } from "../src/ops/arithmetic.ts";
import { randn } from "../src/ops/random.ts";
import { type EvalResult, evaluateRobustness, type Protocol, uploadPoints } from "../src/eval/protocol.ts";
import { accuracyTable, markdownReport, threatLabel, writeEvaluationReport } from "../src/eval/report.ts";
import { runSanityChecks, type SanityReport } from "../src/eval/sanity.ts";
import {
  coveredPoints,
  evaluationPoints,
  mergeResults,
  parseShard,
  type ShardMode,
} from "../src/eval/shard.ts";
import { buildClassifier } from "../src/train/classifier.ts";

import { helpText, type OptionTable, parseOptions, parseSeeds, UsageError } from "../src/train/options.ts";
import { Progress } from "../src/train/progress.ts";
import {
  CHECKPOINT_OPTIONS,
  checkWritableFolder,
  linfBudgetWarning,
  readCheckpointArgument,
  runCommand,
} from "./common.ts";
import { join } from "node:path";

const OPTIONS = {
  checkpoint: { type: "string", default: null, help: "classifier checkpoint (.safetensors)" },
  attack: {
    type: "string",
    default: null,
    choices: attackNames(),
    help: "one attack (or use --suite)",
  },
  suite: {
    type: "string",
    default: null,
    choices: suiteNames(),
    help: "a named suite of attacks (eval mode)",
  },
  norm: { type: "string", default: "linf", choices: ["linf", "l2"], help: "threat model norm" },
  eps: {
    type: "number",
    default: null,
    min: 0,
    help: "budget in [0,1] pixel units, e.g. 8/255 (none: the suite's, else 8/255 linf, 0.5 l2)",
  },
  steps: { type: "integer", default: null, min: 0, help: "iterations (queries for square) of --attack" },
  eot: {
    type: "integer",
    default: null,
    min: 1,
    help:
      "EOT draws per gradient of the gradient attacks (default: 20 on a random model in protocol S, else 1)",
  },
  seed: { type: "integer", default: 0, min: 0, help: "attack seed" },
  seeds: { type: "string", default: null, help: "several attack seeds, e.g. 0,1,2 (random models: >= 3)" },
  draws: {
    type: "integer",
    default: null,
    min: 1,
    help: "draws of a random model per candidate (none: 1, or 10 for a random model)",
  },
  random: {
    type: "string",
    default: "auto",
    choices: ["auto", "yes", "no"],
    help: "is the model random (auto: 5 passes)",
  },
  inputNoise: {
    type: "number",
    default: null,
    min: 0,
    help: "toy random defence: classify x + sigma·N(0,1), a fresh draw per call",
  },
  protocol: {
    type: "string",
    default: "S",
    choices: ["S", "B", "both"],
    help: "S: attack the full model; B: attack the classifier alone (with --input-noise)",
  },
  limit: { type: "integer", default: null, min: 1, help: "class-balanced subset of this many test points" },
  batchSize: { type: "integer", default: 250, min: 1, help: "points per batch (shards must use the same)" },
  shard: { type: "string", default: null, help: "run shard i/n (0-based) of the batches" },
  shardMode: {
    type: "string",
    default: "contiguous",
    choices: ["contiguous", "strided"],
    help: "how batches are split into shards",
  },
  sanity: {
    type: "boolean",
    default: false,
    help: "also run the sanity experiments on the first --sanity-points points",
  },
  sanityPoints: { type: "integer", default: 100, min: 1, help: "points of the sanity experiments" },
  examples: { type: "integer", default: 16, min: 0, help: "adversarial examples saved per setting" },
  out: { type: "string", default: null, help: "folder for result.json, result.md, examples, grids" },
  ...CHECKPOINT_OPTIONS,
  json: { type: "boolean", default: false, help: "print the result summary as JSON" },
} as const satisfies OptionTable;

const MERGE_OPTIONS = {
  out: { type: "string", default: null, help: "folder for the merged result.json and result.md" },
  allowPartial: {
    type: "boolean",
    default: false,
    help: "merge shards that miss part of the evaluation (accuracies over the covered points only)",
  },
} as const satisfies OptionTable;

const USAGE = `usage: deno task attack --checkpoint <file> (--attack <name> | --suite <name>) [options]
       deno task attack merge <shard result.json ...> --out <folder> [--allow-partial]

Attacks: ${attackNames().map((n) => `${n} (${getAttack(n).describe})`).join(";\n  ")}
Suites: ${suiteNames().map((n) => `${n}: ${getSuite(n).describe}`).join(";\n  ")}`;

async function merge(files: string[], out: string | null, allowPartial: boolean): Promise<void> {
  if (files.length === 0) throw new UsageError("merge: give the shard result.json files to merge");
  if (!out) throw new UsageError("merge: --out <folder> is required");
  const results: EvalResult[] = [];
  for (const f of files) {
    let result: EvalResult;
    try {
      result = parseJson<EvalResult>(await Deno.readTextFile(f));
    } catch (e) {
      throw new UsageError(`merge: cannot read ${f}: ${(e as Error).message}`);
    }
    if (result?.format !== "atop-robust-eval/1" || !Array.isArray(result.settings)) {
      throw new UsageError(
        `merge: ${f} is not a result.json of \`deno task attack\` (format atop-robust-eval/1)`,
      );
    }
    results.push(result);
  }
  const merged = mergeResults(results, { allowPartial });
  const covered = coveredPoints(merged);
  const partial = covered < merged.config.points
    ? `, partial: ${covered} of ${merged.config.points} points`
    : "";
  await Deno.mkdir(out, { recursive: true });
  await writeJson(join(out, "result.json"), merged);
  const md = markdownReport(merged, `Robust evaluation (merged from ${files.length} shards${partial})`);
  await writeFileAtomic(join(out, "result.md"), new TextEncoder().encode(md));
  console.log(accuracyTable(merged));
  console.error(
    `merged ${files.length} result file(s): ${covered} of ${merged.config.points} points, into ${out}`,
  );
}

await runCommand(async () => {
  if (Deno.args[0] === "merge") {
    const { values, help, positionals } = await parseOptions(MERGE_OPTIONS, Deno.args.slice(1), true);
    if (help) {
      console.log(
        helpText(
          "usage: deno task attack merge <shard result.json ...> --out <folder> [--allow-partial]",
          MERGE_OPTIONS,
        ),
      );
      return;
    }
    await merge(positionals, values.out as string | null, values.allowPartial as boolean);
    return;
  }
  const { values, explicit: onCommandLine, fromConfig, help } = await parseOptions(OPTIONS, Deno.args);
  // Chosen by the user, on the command line or in --config (against the defaults).
  const explicit = new Set([...onCommandLine, ...fromConfig]);
  if (help) {
    console.log(helpText(USAGE, OPTIONS));
    return;
  }
  if (!values.checkpoint) throw new UsageError("--checkpoint <file> is required (see --help)");
  if (!values.attack === !values.suite) {
    throw new UsageError("give exactly one of --attack <name> or --suite <name>");
  }
  const protocols: Protocol[] = values.protocol === "both" ? ["S", "B"] : [values.protocol as Protocol];
  if (protocols.includes("B") && values.inputNoise === null) {
    throw new UsageError(
      "--protocol B attacks the classifier alone and evaluates the defence: it needs --input-noise",
    );
  }

  // Attacks and threat models.
  const norm = values.norm as Norm;
  const gradientOverrides = (name: string) =>
    values.eot !== null && getAttack(name).access === "white-box" ? { eot: values.eot } : {};
  let attacks: AttackEntry[];
  let threats: ThreatModel[];
  let sequential = false;
  const defaultEps = norm === "linf" ? 8 / 255 : 0.5;
  if (values.suite) {
    const suite = getSuite(values.suite as string);
    if (values.steps !== null) {
      console.warn("warning: --steps is ignored with --suite (the suite fixes its attacks)");
    }
    attacks = suite.attacks.map((a) => ({
      ...a,
      options: { ...a.options, ...gradientOverrides(a.attack as string) },
    }));
    threats = suiteThreats(suite, {
      norm,
      eps: explicit.has("eps") ? values.eps as number : null,
      normGiven: explicit.has("norm"),
      defaultEps,
    });
    sequential = suite.sequential;
  } else {
    const name = values.attack as string;
    const info = getAttack(name);
    const options: Record<string, unknown> = { ...gradientOverrides(name) };
    if (values.steps !== null) {
      if (!info.stepsOption) throw new UsageError(`--steps: ${name} has no iteration count`);
      options[info.stepsOption] = values.steps;
    }
    attacks = [{ label: attackLabel(name, options), attack: name, options }];
    threats = [{ norm, eps: (values.eps as number | null) ?? defaultEps }];
  }
  for (const t of threats) {
    const warning = t.norm === "linf" ? linfBudgetWarning("--eps", t.eps) : null;
    if (warning) console.warn(warning);
  }
  const seeds = values.seeds
    ? parseSeeds(values.seeds as string)
    : explicit.has("seed")
    ? [values.seed as number]
    : undefined;
  let shard = null;
  try {
    if (values.shard) shard = parseShard(values.shard as string, values.shardMode as ShardMode);
  } catch (e) {
    throw new UsageError(`--shard: ${(e as Error).message}`);
  }

  // The output folder is checked now: a long evaluation must not end in an unwritable --out.
  if (values.out) await checkWritableFolder(values.out as string, "--out");

  // Model and data.
  const { config, weights } = await readCheckpointArgument(values, explicit);
  const gpu = await initWebGpu();
  const host = await loadDataset(config.dataset, values.split as "train" | "test", values.dataDir as string);
  const module = buildClassifier(config, host.shape, host.classes.length);
  loadIntoTensors(weights, module.stateDict());
  module.eval();
  const classifier: Model = (x) => module.forward(x);
  const sigma = values.inputNoise as number | null;
  const model: Model = sigma === null
    ? classifier
    : (x) => classifier(add(x, randn(x.shape, { std: sigma })));
  const points = evaluationPoints(host.labels, values.limit as number | null);
  const architecture = `${config.model}${config.width > 1 ? ` x${config.width}` : ""}`;
  const noise = sigma !== null ? ` + input noise ${sigma}` : "";
  const modelName = `${architecture} (${values.checkpoint})${noise}`;
  // Shards merge by the weights' content, not their path (a copy elsewhere is the same model).
  const weightsHash = await sha256Hex(await Deno.readFile(values.checkpoint as string));
  const modelKey = `${architecture} sha256:${weightsHash}${noise}`;

  console.error(
    `attack: ${attacks.map((a) => a.label).join(", ")} at ${threats.map(threatLabel).join(", ")} on ` +
      `${points.length} ${config.dataset}/${values.split} points${shard ? `, shard ${values.shard}` : ""} ` +
      `(${gpu.adapterName})`,
  );
  let progress: Progress | null = null;
  const output = await evaluateRobustness({
    model,
    subModel: protocols.includes("B") ? classifier : undefined,
    dataset: host,
    points,
    threats,
    attacks,
    protocols,
    seeds,
    draws: values.draws as number | undefined ?? undefined,
    random: values.random === "auto" ? "auto" : values.random === "yes",
    sequential,
    batchSize: values.batchSize as number,
    shard,
    limit: values.limit as number | null,
    modelName,
    modelKey,
    datasetName: `${config.dataset}/${values.split}`,
    examples: values.examples as number,
    onProgress: (done, total, fields) => {
      progress ??= new Progress("attack", total);
      progress.update(done, fields);
    },
  });
  (progress as Progress | null)?.done();
  const { result } = output;

  // Optional sanity experiments on the first points.
  const sanityReports: { threat: ThreatModel; report: SanityReport }[] = [];
  if (values.sanity) {
    const { x, y } = uploadPoints(
      host,
      points.subarray(0, Math.min(values.sanityPoints as number, points.length)),
    );
    for (const threat of threats) {
      console.error(`sanity checks at ${threatLabel(threat)} on ${x.shape[0]} points ...`);
      const report = await runSanityChecks(model, x, y, threat, {
        random: result.config.random,
        // The toy defence with its noise frozen (the same draw on every call): PGD must break it.
        frozenModel: sigma === null
          ? undefined
          : (input) => classifier(add(input, randn(input.shape, { std: sigma, seed: 1234, stream: 0 }))),
        iterativeOptions: values.eot !== null ? { eot: values.eot } : {},
      });
      sanityReports.push({ threat, report });
      result.sanity.push(...report.checks.map((c) => ({ ...c, name: `${c.name} (${threatLabel(threat)})` })));
    }
    x.dispose();
    y.dispose();
  }

  if (values.out) {
    const written = await writeEvaluationReport(values.out as string, output, {
      title: `Robust evaluation: ${modelName}`,
    });
    if (sanityReports.length) await writeJson(join(values.out as string, "sanity.json"), sanityReports);
    console.error(
      `wrote ${
        [written.json, written.markdown, written.examples, ...written.grids].filter(Boolean).join(", ")
      }`,
    );
  }
  if (values.json) console.log(JSON.stringify(result.summary, null, 2));
  else console.log(markdownReport(result, `Robust evaluation: ${modelName}`));
  module.dispose();
});

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}
