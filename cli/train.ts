/**
 * `deno task train`: runs a training pipeline in a run folder (config, logs, checkpoints,
 * summary). Stages so far: `classifier`.
 */
import { initWebGpu } from "../src/device/runtime.ts";
import { lineChart, writePng } from "../src/io/png.ts";
import { historyTable, stageName, trainClassifier } from "../src/train/classifier.ts";
import { CLASSIFIER_OPTIONS, classifierConfig } from "../src/train/classifier_options.ts";
import { helpText, type OptionTable, parseOptions, UsageError } from "../src/train/options.ts";
import { RunFolder } from "../src/train/run_folder.ts";
import { runCommand } from "./common.ts";

const OPTIONS = {
  stage: {
    type: "string",
    default: "classifier",
    choices: ["classifier", "at"],
    help:
      "pipeline stage: classifier (standard training) or at (adversarial training, PGD unless --adversarial)",
  },
  out: { type: "string", default: null, help: "run folder (default: runs/<stage>-<date>)" },
  resume: { type: "boolean", default: false, help: "continue the run in --out from its last checkpoint" },
  ...CLASSIFIER_OPTIONS,
} as const satisfies OptionTable;

const USAGE = "usage: deno task train [options]\n\n" +
  "Trains in a run folder holding config.json, log.jsonl, checkpoints/ and summary.{json,md}.\n" +
  "Kill it at any time; `--resume --out <run folder>` continues exactly where it stopped.";

await runCommand(async () => {
  const { values, explicit, help } = await parseOptions(OPTIONS, Deno.args);
  if (help) {
    console.log(helpText(USAGE, OPTIONS));
    return;
  }
  if (values.resume && !values.out) throw new UsageError("--resume needs --out <run folder>");
  const run = new RunFolder((values.out as string | null) ?? RunFolder.defaultName(values.stage as string));
  let config = classifierConfig(values);
  if (values.stage === "at" && !explicit.has("adversarial")) config.adversarial = "pgd";
  if (values.stage === "classifier" && config.adversarial !== "none") {
    throw new UsageError("--adversarial trains the `at` stage: pass --stage at");
  }
  if (values.resume) {
    if (!(await run.exists("config.json"))) {
      throw new UsageError(
        `--resume: ${run.configPath} does not exist (is --out the folder of an earlier run?)`,
      );
    }
    const saved = await run.readJson<{ config: typeof config }>("config.json");
    const overridden = [...explicit].filter((k) => !["out", "resume", "stage", "stopAfterSteps"].includes(k));
    if (overridden.length) {
      throw new UsageError(
        `--resume uses the saved config; do not pass ${overridden.map((k) => "--" + k).join(", ")}`,
      );
    }
    config = { ...saved.config, stopAfterSteps: config.stopAfterSteps };
  } else if (await run.exists("config.json")) {
    throw new UsageError(
      `${run.dir} already holds a run; pass --resume to continue it or choose another --out`,
    );
  }

  const gpu = await initWebGpu();
  await run.create();
  if (!values.resume) {
    await run.writeJson("config.json", { stage: values.stage, config, adapter: gpu.adapterName });
  }
  console.error(`run folder: ${run.dir}`);

  const { result, model } = await trainClassifier(config, run, { resume: values.resume as boolean });
  model.dispose();
  if (!result.completed) return;

  const summary = {
    stage: stageName(config),
    adapter: gpu.adapterName,
    adapterClass: gpu.adapterClass,
    config,
    testAccuracy: result.testAccuracy,
    wallSeconds: result.wallSeconds,
    history: result.history,
  };
  await run.writeJson("summary.json", summary);
  await writePng(
    run.path("loss.png"),
    lineChart([{ name: "train loss", values: result.losses.map(([, l]) => l) }], {
      width: 640,
      height: 360,
      title: "classifier training loss",
    }),
  );
  const md = `# ${stageName(config) === "at" ? "Adversarial training" : "Classifier"} run\n\n` +
    `- model ${config.model} on ${config.dataset}, ${config.epochs} epochs, batch ${config.batchSize}, ` +
    `${config.optimizer} lr ${config.lr} (${config.schedule})\n` +
    `- adapter: ${gpu.adapterName} (${gpu.adapterClass})\n` +
    `- final test accuracy: ${(100 * (result.testAccuracy ?? 0)).toFixed(2)}%\n` +
    `- wall time: ${result.wallSeconds.toFixed(0)} s\n\n` +
    historyTable(result.history) + "\n\n![training loss](loss.png)\n";
  await Deno.writeTextFile(run.path("summary.md"), md);
  console.log(
    `test accuracy ${(100 * (result.testAccuracy ?? 0)).toFixed(2)}%; report: ${run.path("summary.md")}`,
  );
});
