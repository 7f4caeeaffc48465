/**
 * The study report, in the run folder: report.md, report.json, figure3.png and one loss-curve
 * PNG per stage (curves/<stage>.png). The "findings" are generated from the numbers: each states
 * a claim of the paper (docs/ATOP.md §1, §7), the two numbers it compares and whether it holds
 * beyond sampling noise (2σ of the difference of two proportions on n points) — no hand-written
 * claims.
 */
import { type Image, lineChart, writePng } from "../io/png.ts";
import { markdownTable } from "../io/report.ts";
import { noiseTolerance, pairedDifference } from "../eval/sanity.ts";
import type { RunFolder } from "../train/run_folder.ts";
import type { StudyConfig } from "./config.ts";
import type { Cell, Comparison, RowResult } from "./evaluate.ts";
import type { StageRecord } from "./run.ts";
import { purifierWidth } from "../purify/pipeline.ts";
import { describeRt } from "../purify/transforms.ts";

export interface Finding {
  claim: string;
  /** "A > B" or "A ≥ B". */
  kind: ">" | ">=";
  /**
   * true: A is above B beyond noise; false: B is above A beyond noise (or, for "A > B", A is not
   * above B); null: within noise, which does not refute a "≥" claim but does not show it either.
   */
  holds: boolean | null;
  detail: string;
}

export interface StudyReport {
  format: "atop-study-report/1";
  profile: string;
  adapter: string;
  config: StudyConfig;
  stages: {
    stage: string;
    wallSeconds: number;
    history: StageRecord["result"]["history"];
    facts: Record<string, unknown>;
  }[];
  comparison: Comparison;
  /** What each row of figure3.png shows, top to bottom. */
  figureRows: string[];
  findings: Finding[];
  sanity: { row: string; name: string; passed: boolean | null; detail: string }[];
  wallSeconds: number;
}

const pct = (x: number) => (100 * x).toFixed(1);

export function formatCell(c: Cell): string {
  return c.singleDraw.perSeed.length > 1
    ? `${pct(c.singleDraw.mean)} ± ${pct(c.singleDraw.std)}`
    : pct(c.singleDraw.mean);
}

/**
 * "A > B" or "A ≥ B", judged against the noise: A above B beyond it, B above A beyond it, or
 * within it (reported as such: a "≥" claim within noise is not refuted, and not shown). Rows
 * share their evaluation points, so the noise is that of the per-point differences (a paired
 * test); cells without per-point data (older comparison.json files) fall back to two
 * independent means.
 */
function compare(claim: string, a: Cell, b: Cell, kind: ">" | ">=", names: [string, string]): Finding {
  const paired = a.perPoint && b.perPoint ? pairedDifference(a.perPoint, b.perPoint) : null;
  const n = paired?.n ?? Math.min(a.n, b.n);
  const diff = paired?.diff ?? a.singleDraw.mean - b.singleDraw.mean;
  const tol = paired?.tolerance ?? noiseTolerance(a.singleDraw.mean, b.singleDraw.mean, n);
  const holds = diff > tol ? true : diff < -tol ? false : null;
  return {
    claim,
    kind,
    holds,
    detail: `${names[0]} ${pct(a.singleDraw.mean)} % vs ${names[1]} ${pct(b.singleDraw.mean)} % ` +
      `(difference ${diff >= 0 ? "+" : ""}${pct(diff)} points, noise ±${pct(tol)} ${
        paired ? "paired " : ""
      }on n = ${n})`,
  };
}

/** The findings the numbers support or not (rows that are absent are skipped). */
export function findings(comparison: Comparison): Finding[] {
  const row = (key: string) => comparison.rows.find((r) => r.key === key);
  const cell = (r: RowResult, col: string) => r.cells[col];
  const out: Finding[] = [];
  const ap = row("ap"), at = row("at");
  const atops = ["atop-fgsm-transfer", "atop-adaptive"].map(row).filter((r): r is RowResult => !!r);
  const adaptive = row("atop-adaptive"), cleanFt = row("atop-clean");
  if (ap) {
    for (const r of atops) {
      out.push(compare(
        `${r.label} beats AP under protocol B (PGD on the classifier alone, then purified)`,
        cell(r, "B:PGD"),
        cell(ap, "B:PGD"),
        ">",
        [r.label, "AP"],
      ));
      out.push(compare(`${r.label} keeps AP's clean accuracy`, cell(r, "clean"), cell(ap, "clean"), ">=", [
        r.label,
        "AP",
      ]));
    }
    if (adaptive) {
      out.push(compare(
        "AToP adaptive is at least as robust as AP under protocol S (full-gradient EOT, worst case)",
        cell(adaptive, "S:worst"),
        cell(ap, "S:worst"),
        ">=",
        ["AToP adaptive", "AP"],
      ));
    }
  }
  for (const r of comparison.rows.filter((r) => r.random)) {
    out.push(compare(
      `${r.label}: protocol S (full gradient) is below protocol B (transfer) — B overstates robustness`,
      cell(r, "B:PGD"),
      cell(r, "S:worst"),
      ">",
      ["B PGD", "S worst case"],
    ));
  }
  if (at) {
    const others = comparison.rows.filter((r) => r.key !== "at" && r.key !== "classifier");
    if (others.length) {
      const best = others.reduce((a, b) =>
        cell(a, "S:worst").singleDraw.mean >= cell(b, "S:worst").singleDraw.mean ? a : b
      );
      out.push(compare(
        "AT is the most robust on the threat it was trained on (protocol S worst case)",
        cell(at, "S:worst"),
        cell(best, "S:worst"),
        ">=",
        ["AT", best.label],
      ));
    }
    const purifier = adaptive ?? atops[0];
    if (purifier) {
      for (
        const [col, name] of [["unseen:PGD", "the unseen l2 attack"], ["unseen:StAdv", "StAdv"]] as const
      ) {
        out.push(compare(
          `${purifier.label} beats AT on ${name} (generalisation to unseen threats)`,
          cell(purifier, col),
          cell(at, col),
          ">",
          [purifier.label, "AT"],
        ));
      }
    }
  }
  if (adaptive && cleanFt) {
    out.push(compare(
      "fine-tuning on adversarial examples matters: AToP adaptive beats the clean-FT ablation under protocol S",
      cell(adaptive, "S:worst"),
      cell(cleanFt, "S:worst"),
      ">",
      ["AToP adaptive", "clean-FT"],
    ));
  }
  return out;
}

function verdict({ holds, kind }: Finding): string {
  if (holds === true) return "holds";
  if (holds === false) return "**does not hold**";
  return kind === ">=" ? "within noise (not refuted, not shown)" : "within noise";
}

export function comparisonTable(comparison: Comparison): string {
  const groups = { B: "B: ", S: "S: ", unseen: "unseen: " };
  return markdownTable(
    ["row", ...comparison.columns.map((c) => (c.key === "clean" ? "clean" : groups[c.group] + c.label))],
    comparison.rows.map((r) => [r.label, ...comparison.columns.map((c) => formatCell(r.cells[c.key]))]),
  );
}

function stageTable(stages: StudyReport["stages"]): string {
  return markdownTable(
    ["stage", "epochs", "wall s", "last epoch (train)", "last epoch (eval)"],
    stages.map((s) => {
      const last = s.history.at(-1);
      // A value that is not a number (null in a record written before non-finite numbers were
      // kept) prints as it is instead of failing the report.
      const show = (m: Record<string, number> | undefined) =>
        Object.entries(m ?? {}).map(([k, v]) =>
          typeof v !== "number"
            ? `${k} ${v}`
            : `${k} ${k.toLowerCase().includes("accuracy") ? pct(v) + " %" : v.toFixed(4)}`
        )
          .join(", ");
      return [s.stage, s.history.length, s.wallSeconds.toFixed(0), show(last?.train), show(last?.eval)];
    }),
  );
}

export function studyMarkdown(report: StudyReport): string {
  const c = report.comparison;
  const e = report.config.evaluation;
  const failed = report.sanity.filter((s) => s.passed === false);
  return [
    `# AToP study — profile \`${report.profile}\``,
    "",
    `Adapter: ${report.adapter}. Wall time: ${(report.wallSeconds / 60).toFixed(1)} min. ` +
    `Dataset: ${report.config.dataset}; classifier ${report.config.classifier.model}; purifier ` +
    `${report.config.pretrain.purifier.kind} (width ${purifierWidth(report.config.pretrain.purifier)}${
      (report.config.pretrain.purifier.inputScale ?? 1) > 1
        ? `, run at ${report.config.pretrain.purifier.inputScale}× the input size`
        : ""
    }); ` +
    `transform ${describeRt(report.config.pretrain.rt)}.`,
    "",
    "## Comparison",
    "",
    `Accuracy in % on the same ${c.points} class-balanced test points. Purifier rows are random: single-draw ` +
    `accuracy over R = ${c.draws} fresh draws, mean ± sample std (n − 1) over ${c.seeds.length} attack seeds (majority-vote ` +
    `accuracy in report.json). **B**: attacks on the classifier alone, then purified (what the AToP notebooks ` +
    `report; an upper bound). **S**: full-gradient attacks through transform, purifier and classifier, each ` +
    `gradient averaged over EOT ${e.eot} fresh draws (deterministic rows: EOT 1); EOT-PGD-k is PGD with a ` +
    `random start and steps of max(ε/4, 2.5·ε/k), not Lee & Kim's fixed 0.007 without one; the worst case ` +
    `is per point over clean and the linf attacks, re-evaluated on R fresh draws. **unseen**: threats no row ` +
    `was trained on. linf budget ${Number(e.linfEps.toPrecision(4))}, l2 ${e.l2Eps}, StAdv flow bound ` +
    `${e.stadvBound}.`,
    "",
    comparisonTable(c),
    "",
    "## Findings (generated from the table)",
    "",
    ...report.findings.map((f) => `- ${f.claim}: ${verdict(f)} — ${f.detail}.`),
    "",
    "## Figure 3: clean, adversarial, transformed, purified",
    "",
    "![figure 3](figure3.png)",
    "",
    report.figureRows.length
      ? `Rows, top to bottom: ${report.figureRows.map((r, i) => `${i + 1}. ${r}`).join("; ")}.`
      : "(no purifier row was evaluated)",
    "",
    "## Training stages",
    "",
    stageTable(report.stages),
    "",
    ...report.stages.map((s) => `![${s.stage}](curves/${s.stage}.png)`),
    "",
    "## Sanity checks",
    "",
    failed.length
      ? `${failed.length} of ${report.sanity.length} checks failed:`
      : `All ${report.sanity.filter((s) => s.passed !== null).length} checks passed ` +
        `(${report.sanity.filter((s) => s.passed === null).length} not applicable).`,
    "",
    markdownTable(
      ["row", "check", "verdict", "detail"],
      report.sanity.map((
        s,
      ) => [s.row, s.name, s.passed === null ? "n/a" : s.passed ? "pass" : "**FAIL**", s.detail]),
    ),
    "",
  ].join("\n");
}

/** Loss curve of a stage: every metric of its readbacks (accuracies excluded), against the step. */
export function stageCurve(record: StageRecord): Image {
  const series = record.result.metrics
    .map((name, i) => ({ name, values: record.result.curve.map((p) => p[i + 1]) }))
    .filter((s) => !s.name.toLowerCase().includes("accuracy") && s.values.every(Number.isFinite));
  return lineChart(series, { width: 640, height: 320, title: `${record.stage}: training loss per readback` });
}

export async function writeStudyReport(
  run: RunFolder,
  report: StudyReport,
  curves: { stage: string; image: Image }[],
): Promise<string> {
  await Deno.mkdir(run.path("curves"), { recursive: true });
  for (const c of curves) await writePng(run.path(`curves/${c.stage}.png`), c.image);
  await run.writeJson("report.json", report);
  await Deno.writeTextFile(run.path("report.md"), studyMarkdown(report));
  return run.path("report.md");
}
