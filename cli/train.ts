/**
 * `deno task train`: the AToP study in one run folder — classifier, AT baseline, purifier
 * pre-training, AToP fine-tuning (fgsm-transfer, adaptive, clean ablation), evaluation and the
 * report. Every stage checkpoints as it goes; `--resume --out <folder>` continues a killed run.
 */
import { initWebGpu } from "../src/device/runtime.ts";
import {
  checkSavedConfig,
  parseStages,
  RESUME_KEYS,
  STUDY_OPTIONS,
  studyConfig,
} from "../src/study/options.ts";
import { fixAdapterDefaults, PROFILES, type StudyConfig } from "../src/study/config.ts";
import { checkStudySetup, missingInputs } from "../src/study/run.ts";
import { runStudy } from "../src/study/study.ts";
import { flagName, helpText, parseOptions, UsageError } from "../src/train/options.ts";
import { RunFolder } from "../src/train/run_folder.ts";
import { importedWeightsNote, linfBudgetWarning, runCommand } from "./common.ts";

const USAGE = "usage: deno task train [options]\n\n" +
  "Runs the AToP study: classifier -> at -> pretrain -> atop (per mode) -> evaluate, in a run folder\n" +
  "holding config.json, log.jsonl, checkpoints/, stages/, evaluate/, report.md, report.json, figure3.png and curves/.\n" +
  "Kill it at any time; `--resume --out <run folder>` continues where it stopped.\n\nProfiles:\n" +
  Object.entries(PROFILES).map(([name, p]) => `  ${name.padEnd(14)}${p.describe}`).join("\n");

await runCommand(async () => {
  const { values, explicit, configFile, help } = await parseOptions(STUDY_OPTIONS, Deno.args);
  if (help) {
    console.log(helpText(USAGE, STUDY_OPTIONS, "the profile's"));
    return;
  }
  if (values.resume && !values.out) throw new UsageError("--resume needs --out <run folder>");
  const stages = parseStages(values.stages as string);
  const run = new RunFolder((values.out as string | null) ?? RunFolder.defaultName("atop"));
  let config: StudyConfig;
  if (values.resume) {
    if (!(await run.exists("config.json"))) {
      throw new UsageError(
        `--resume: ${run.configPath} does not exist (is --out the folder of an earlier run?)`,
      );
    }
    const overridden = [...explicit].filter((k) => !RESUME_KEYS.includes(k)).map((k) => "--" + flagName(k));
    if (configFile !== null) overridden.push(`--config ${configFile}`);
    if (overridden.length) {
      throw new UsageError(`--resume uses the saved config.json; do not pass ${overridden.join(", ")}`);
    }
    config = checkSavedConfig(
      (await run.readJson<{ config: StudyConfig }>("config.json")).config,
      run.configPath,
    );
  } else {
    // A folder whose run never got a stage going (e.g. its dataset was missing) holds nothing to
    // resume: the same command may start it again.
    if (await run.exists("config.json") && await startedStages(run)) {
      throw new UsageError(
        `${run.dir} already holds a run; pass --resume to continue it or choose another --out`,
      );
    }
    config = studyConfig(values);
  }

  // Inputs of the chosen stages, checked before any of them trains.
  await checkStudySetup(config);
  const budgetWarning = linfBudgetWarning("--eps", config.evaluation.linfEps);
  if (budgetWarning) console.error(budgetWarning);
  const missing = await missingInputs(
    config,
    run,
    stages,
    (read) => console.error(importedWeightsNote(read, "--classifier-normalize")),
  );
  if (missing.length) {
    throw new UsageError(
      `--stages ${values.stages}: needs ${missing.join("; ")}: add the stages that make it`,
    );
  }
  const gpu = await initWebGpu();
  await run.create();
  if (!values.resume) {
    fixAdapterDefaults(config, gpu.adapterClass);
    await run.writeJson("config.json", { profile: config.profile, config, adapter: gpu.adapterName });
  }
  console.error(`run folder: ${run.dir} (profile ${config.profile})`);
  const started = performance.now();
  const outcome = await runStudy(config, run, {
    adapter: `${gpu.adapterName} (${gpu.adapterClass === "cpu" ? "CPU adapter" : "GPU"})`,
    stages,
    stopAfterSteps: values.stopAfterSteps as number | null,
  });
  const minutes = ((performance.now() - started) / 60000).toFixed(1);
  if (!outcome.completed) {
    console.error(`stopped after ${minutes} min; continue with: deno task train --resume --out ${run.dir}`);
    return;
  }
  if (outcome.reportPath) console.log(`done in ${minutes} min; report: ${outcome.reportPath}`);
  else {console.log(
      `stages ${values.stages} done in ${minutes} min; checkpoints in ${run.path("checkpoints")}`,
    );}
});

/** Whether any stage of the run in `run` wrote a checkpoint or a stage record. */
async function startedStages(run: RunFolder): Promise<boolean> {
  for (const folder of ["checkpoints", "stages"]) {
    try {
      for await (const _ of Deno.readDir(run.path(folder))) return true;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return false;
}
