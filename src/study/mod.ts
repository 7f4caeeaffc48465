/** The AToP study: profiles, stages, comparison and report (what `deno task train` runs). */
export * from "./config.ts";
export * from "./run.ts";
export * from "./evaluate.ts";
export * from "./report.ts";
export * from "./study.ts";
export {
  ATOP_MODES,
  type AtopConfig,
  type AtopMode,
  atopStageName,
  fineTunePurifier,
} from "../train/atop.ts";
export { buildPurifier, type PretrainConfig, pretrainPurifier } from "../train/pretrain.ts";
export { trainClassifier } from "../train/classifier.ts";
export { runStage, type StageDefinition, type StageResult } from "../train/stage_runner.ts";
export { RunFolder } from "../train/run_folder.ts";
