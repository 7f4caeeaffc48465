/**
 * The whole AToP study in one call: the training stages (resumable, see run.ts), then the
 * `evaluate` stage (the comparison table) and the report (report.md/json, figure3.png, curves).
 */
import type { ExampleSet } from "../eval/protocol.ts";
import { writePng } from "../io/png.ts";
import type { RunFolder } from "../train/run_folder.ts";
import type { StudyConfig } from "./config.ts";
import { type Comparison, evaluateStudy } from "./evaluate.ts";
import { figureImage, figureRows } from "./figure.ts";
import { findings, stageCurve, type StudyReport, writeStudyReport } from "./report.ts";
import { readStageRecord, runStudyTraining, type StudyOptions, studyStages } from "./run.ts";

export interface StudyOutcome {
  /** Every requested stage completed. */
  completed: boolean;
  /** report.md, when the evaluate stage ran. */
  reportPath: string | null;
  report: StudyReport | null;
}

export async function runStudy(
  config: StudyConfig,
  run: RunFolder,
  options: StudyOptions & { adapter: string },
): Promise<StudyOutcome> {
  const log = options.log ?? ((s: string) => console.error(s));
  const trained = await runStudyTraining(config, run, options);
  if (!trained) return { completed: false, reportPath: null, report: null };
  if (options.stages && !options.stages.includes("evaluate")) {
    return { completed: true, reportPath: null, report: null };
  }

  // The evaluate stage's results are comparison.json and the figure (figure3.png, figure.json),
  // comparison.json written last: a resumed run that finds it only rewrites the report. Each
  // finished row is also kept in evaluate/<row>.json, so a kill mid-evaluation loses one row.
  let comparison: Comparison;
  let figureLabels: string[];
  if (await run.exists("comparison.json") && await run.exists("figure.json")) {
    log("evaluate: done earlier (comparison.json); rewriting the report");
    comparison = await run.readJson<Comparison>("comparison.json");
    figureLabels = (await run.readJson<{ rows: string[] }>("figure.json")).rows;
  } else {
    const examples: Record<string, ExampleSet[]> = {};
    comparison = await evaluateStudy(config, run, {
      log,
      tty: options.tty,
      onExamples: (row, sets) => examples[row] = sets,
    });
    figureLabels = await writeFigure(config, run, comparison, examples);
    await run.writeJson("figure.json", { rows: figureLabels });
    await run.writeJson("comparison.json", comparison);
  }

  const records = [];
  for (const stage of studyStages(config)) {
    const record = await readStageRecord(run, stage);
    if (record) records.push(record);
  }

  const sanity = comparison.rows.flatMap((r) =>
    r.sanity.map((s) => ({ row: r.label, name: s.name, passed: s.passed, detail: s.detail }))
  );
  const report: StudyReport = {
    format: "atop-study-report/1",
    profile: config.profile,
    adapter: options.adapter,
    config,
    stages: records.map((r) => ({
      stage: r.stage,
      wallSeconds: r.result.wallSeconds,
      history: r.result.history,
      facts: r.facts,
    })),
    comparison,
    figureRows: figureLabels,
    findings: findings(comparison),
    sanity,
    wallSeconds: records.reduce((s, r) => s + r.result.wallSeconds, 0) + comparison.seconds,
  };
  const reportPath = await writeStudyReport(
    run,
    report,
    records.map((r) => ({ stage: r.stage, image: stageCurve(r) })),
  );
  return { completed: true, reportPath, report };
}

/**
 * Figure 3 (figure3.png): the full-gradient attack on the AToP row (adaptive if it ran),
 * purified by each purifier. Returns the labels of its rows (none without purifier rows).
 */
async function writeFigure(
  config: StudyConfig,
  run: RunFolder,
  comparison: Comparison,
  examples: Record<string, ExampleSet[]>,
): Promise<string[]> {
  const purifierRows = comparison.rows.filter((r) => r.random);
  const shown = purifierRows.find((r) => r.key === "atop-adaptive") ?? purifierRows.at(-1);
  const set = shown ? examples[shown.key]?.[0] : undefined;
  if (!shown || !set) return [];
  const attack = Object.keys(set.adversarial)[0];
  const rows = await figureRows(
    config,
    run,
    set,
    `${attack} on ${shown.label}`,
    attack,
    purifierRows.map((r) => ({ label: r.label, stage: r.stage })),
  );
  await writePng(run.path("figure3.png"), figureImage(rows, set.shape));
  return rows.map((r) => r.label);
}
