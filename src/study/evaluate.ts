/**
 * The `evaluate` stage: every row of the comparison table under the same attacks, on the same
 * class-balanced test points, with the random-defence protocol of docs/ATTACKS.md
 * (src/eval/protocol.ts: fresh draws, single-draw and majority-vote accuracy, several seeds).
 *
 * Rows: the classifier alone, the AT baseline, AP (the pre-trained purifier), AToP in each mode.
 * Column groups, each one `evaluateRobustness` call per row:
 *   B (transfer): FGSM and PGD-k on the row's classifier ALONE, then the whole row evaluated on
 *     them — what the AToP notebooks report; an upper bound for purifier rows;
 *   S (full gradient): EOT-PGD, APGD-CE and APGD-DLR through transform, purifier and classifier,
 *     each gradient averaged over EOT fresh draws, at the trained-on linf budget;
 *   unseen: EOT-PGD at an l2 budget and StAdv (spatial flow), also full gradient.
 * Deterministic rows (no purifier) get EOT 1: their gradient does not change between draws.
 */
import type { Model, ThreatModel } from "../attacks/types.ts";
import { loadDataset } from "../data/by_name.ts";
import type { Dataset } from "../data/dataset.ts";
import { type AttackEntry, type EvalResult, evaluateRobustness, type ExampleSet } from "../eval/protocol.ts";
import { findRow, type Stat } from "../eval/report.ts";
import type { SanityCheck } from "../eval/sanity.ts";
import { evaluationPoints } from "../eval/shard.ts";
import type { Module } from "../nn/module.ts";
import { PurifiedClassifier, type Purifier } from "../purify/pipeline.ts";
import { RandomTransform } from "../purify/transforms.ts";
import { atopStageName } from "../train/atop.ts";
import { loadClassifier } from "../train/classifier.ts";
import type { RunFolder } from "../train/run_folder.ts";
import { Progress } from "../train/progress.ts";
import type { StudyConfig } from "./config.ts";
import { classifierPath, studyClassifier, studyPurifier } from "./run.ts";

export type Group = "B" | "S" | "unseen";

/** One column of the table. */
export interface Column {
  key: string;
  group: Group;
  label: string;
}

export interface Cell {
  /** Single-draw accuracy, mean ± std over seeds, in [0, 1]. */
  singleDraw: Stat;
  /** Majority vote over R draws, mean ± std over seeds. */
  majority: Stat;
  /** Points per seed. */
  n: number;
  /** Attack seconds per seed (null for clean and worst-case columns). */
  seconds: number | null;
  /**
   * Per evaluation point: fraction of draws correct, mean over seeds (for paired comparisons;
   * absent in comparison.json files written before it existed).
   */
  perPoint?: (number | null)[];
}

export interface RowResult {
  key: string;
  label: string;
  /** The checkpoint stage it was loaded from. */
  stage: string;
  random: boolean;
  cells: Record<string, Cell>;
  sanity: SanityCheck[];
  seconds: number;
}

export interface Comparison {
  columns: Column[];
  rows: RowResult[];
  points: number;
  seeds: number[];
  draws: number;
  threats: { linf: ThreatModel; l2: ThreatModel; stadvBound: number };
  seconds: number;
}

interface RowSpec {
  key: string;
  label: string;
  stage: string;
  /** Purifier stage, or null for a classifier alone. */
  purifier: string | null;
}

export function comparisonRows(config: StudyConfig): RowSpec[] {
  const rows: RowSpec[] = [{
    key: "classifier",
    label: "classifier alone",
    stage: "classifier",
    purifier: null,
  }];
  if (config.at) {
    const from = config.atInit === "classifier" ? ", fine-tuned" : "";
    rows.push({ key: "at", label: `AT (PGD-${config.at.advSteps}${from})`, stage: "at", purifier: null });
  }
  rows.push({ key: "ap", label: "AP (pre-trained purifier)", stage: "pretrain", purifier: "pretrain" });
  const labels = {
    "fgsm-transfer": "AToP fgsm-transfer",
    adaptive: "AToP adaptive",
    clean: "clean-FT (ablation)",
  };
  for (const mode of config.atopModes) {
    const stage = atopStageName(mode);
    rows.push({ key: stage, label: labels[mode], stage, purifier: stage });
  }
  return rows;
}

/** The attacks of each group, with the profile's sizes. */
function groupAttacks(config: StudyConfig, random: boolean): Record<Group, AttackEntry[]> {
  const e = config.evaluation;
  const eot = random ? e.eot : 1;
  const eotLabel = random ? ` EOT-${eot}` : "";
  return {
    B: [
      { label: "FGSM", attack: "fgsm" },
      { label: `PGD-${e.transferPgdSteps}`, attack: "pgd", options: { steps: e.transferPgdSteps } },
    ],
    S: [
      { label: `PGD-${e.pgdSteps}${eotLabel}`, attack: "pgd", options: { steps: e.pgdSteps, eot } },
      { label: `APGD-CE-${e.apgdSteps}${eotLabel}`, attack: "apgd-ce", options: { steps: e.apgdSteps, eot } },
      {
        label: `APGD-DLR-${e.apgdSteps}${eotLabel}`,
        attack: "apgd-dlr",
        options: { steps: e.apgdSteps, eot },
      },
    ],
    unseen: [
      { label: `l2 PGD-${e.pgdSteps}${eotLabel}`, attack: "pgd", options: { steps: e.pgdSteps, eot } },
      {
        label: `StAdv-${e.stadvSteps}${eotLabel}`,
        attack: "stadv",
        options: { steps: e.stadvSteps, bound: e.stadvBound, eot },
        threatIndependent: true,
      },
    ],
  };
}

/** Column keys and labels (labels without the EOT suffix, which depends on the row). */
export function comparisonColumns(config: StudyConfig): Column[] {
  const e = config.evaluation;
  const linf = `linf ${Number(e.linfEps.toPrecision(4))}`, l2 = `l2 ${e.l2Eps}`;
  return [
    { key: "clean", group: "B", label: "clean" },
    { key: "B:FGSM", group: "B", label: `FGSM ${linf}` },
    { key: "B:PGD", group: "B", label: `PGD-${e.transferPgdSteps} ${linf}` },
    { key: "S:PGD", group: "S", label: `EOT-PGD-${e.pgdSteps} ${linf}` },
    { key: "S:APGD-CE", group: "S", label: `APGD-CE ${linf}` },
    { key: "S:APGD-DLR", group: "S", label: `APGD-DLR ${linf}` },
    { key: "S:worst", group: "S", label: `worst case ${linf}` },
    { key: "unseen:PGD", group: "unseen", label: `EOT-PGD-${e.pgdSteps} ${l2}` },
    { key: "unseen:StAdv", group: "unseen", label: `StAdv ${e.stadvBound}` },
  ];
}

/** Which summary row (by label) of which call fills each column. */
const COLUMN_SOURCES: Record<string, { group: Group; index: number | "clean" | "worst" }> = {
  clean: { group: "B", index: "clean" },
  "B:FGSM": { group: "B", index: 0 },
  "B:PGD": { group: "B", index: 1 },
  "S:PGD": { group: "S", index: 0 },
  "S:APGD-CE": { group: "S", index: 1 },
  "S:APGD-DLR": { group: "S", index: 2 },
  "S:worst": { group: "S", index: "worst" },
  "unseen:PGD": { group: "unseen", index: 0 },
  "unseen:StAdv": { group: "unseen", index: 1 },
};

export interface EvaluateStudyOptions {
  log?: (line: string) => void;
  /** Progress bar on a terminal (default: when stderr is a terminal). */
  tty?: boolean;
  /** Called per row with its first examples (for the Figure-3 grid). */
  onExamples?: (row: string, examples: ExampleSet[]) => void;
}

/** A row's model: the classifier, or transform → purifier → classifier with fresh draws. */
interface RowModel {
  model: Model;
  classifier: Module;
  purifier: Purifier | null;
  pipeline: PurifiedClassifier | null;
  dispose(): void;
}

async function rowModel(
  config: StudyConfig,
  run: RunFolder,
  spec: RowSpec,
  host: Dataset,
): Promise<RowModel> {
  const shape = { shape: host.shape, classes: host.classes };
  const classifier = spec.key === "at"
    ? (await loadClassifier(run.checkpointPath("at"), host.shape, host.classes.length)).model
    : await studyClassifier(config, run, shape);
  classifier.eval();
  if (!spec.purifier) {
    return {
      model: (x) => classifier.forward(x),
      classifier,
      purifier: null,
      pipeline: null,
      dispose: () => classifier.dispose(),
    };
  }
  const purifier = await studyPurifier(config, run, spec.purifier, host.shape[0]);
  purifier.eval();
  const pipeline = new PurifiedClassifier(new RandomTransform(config.pretrain.rt), purifier, classifier);
  return {
    model: pipeline.model,
    classifier,
    purifier,
    pipeline,
    dispose: () => {
      purifier.dispose();
      classifier.dispose();
    },
  };
}

function cellOf(result: EvalResult, threat: ThreatModel, label: string, protocol: "B" | "S"): Cell {
  const row = findRow(result, { protocol, threat }, label);
  if (!row) throw new Error(`evaluate: no summary row '${label}' (${protocol}) in the result`);
  return {
    singleDraw: row.singleDraw,
    majority: row.majority,
    n: row.n,
    seconds: row.seconds,
    perPoint: row.perPoint,
  };
}

/** Runs the comparison; `rows` limits it to some row keys (default all). */
export async function evaluateStudy(
  config: StudyConfig,
  run: RunFolder,
  options: EvaluateStudyOptions = {},
): Promise<Comparison> {
  const log = options.log ?? ((s: string) => console.error(s));
  const e = config.evaluation;
  const host = await loadDataset(config.dataset, "test", config.classifier.dataDir);
  const points = evaluationPoints(host.labels, e.points);
  const seeds = Array.from({ length: e.seeds }, (_, i) => i);
  const linf: ThreatModel = { norm: "linf", eps: e.linfEps };
  const l2: ThreatModel = { norm: "l2", eps: e.l2Eps };
  const rows: RowResult[] = [];
  for (const spec of comparisonRows(config)) {
    // A row finished before a kill is read back, not attacked again: rows are independent (every
    // batch of the protocol reseeds itself), so the table is the one an uninterrupted run makes.
    const fingerprint = await rowFingerprint(config, run, spec);
    const saved = await readSavedRow(run, spec.key, fingerprint);
    if (saved) {
      log(`evaluate: ${spec.label}: done earlier (${rowFile(spec.key)})`);
      rows.push(saved.row);
      options.onExamples?.(spec.key, saved.examples);
      continue;
    }
    const rowStarted = performance.now();
    const m = await rowModel(config, run, spec, host);
    const random = m.pipeline !== null;
    const warned = new Set<string>();
    let progress: Progress | null = null;
    const finishCall = () => {
      progress?.done({});
      progress = null;
    };
    const attacks = groupAttacks(config, random);
    const common = {
      model: m.model,
      dataset: host,
      points,
      random,
      seeds: random ? seeds : [0],
      draws: random ? e.draws : 1,
      batchSize: e.batchSize,
      modelName: spec.label,
      datasetName: config.dataset,
      examples: e.figureSamples,
      onProgress: (done: number, total: number, fields: Record<string, string | number>) => {
        progress ??= new Progress(`evaluate ${spec.key}`, total, { tty: options.tty });
        progress.update(done, fields);
      },
      warn: (w: string) => {
        if (!warned.has(w)) log(`  note (${spec.label}): ${w}`);
        warned.add(w);
      },
    };
    try {
      log(
        `evaluate: ${spec.label} (${points.length} points${
          random ? `, ${seeds.length} seeds, R ${e.draws}` : ""
        })`,
      );
      const classifierAlone: Model = (x) => m.classifier.forward(x);
      const b = await evaluateRobustness({
        ...common,
        protocols: ["B"],
        subModel: classifierAlone,
        threats: [linf],
        attacks: attacks.B,
      });
      finishCall();
      const s = await evaluateRobustness({
        ...common,
        protocols: ["S"],
        threats: [linf],
        attacks: attacks.S,
      });
      finishCall();
      options.onExamples?.(spec.key, s.examples);
      const u = await evaluateRobustness({
        ...common,
        protocols: ["S"],
        threats: [l2],
        attacks: attacks.unseen,
      });
      finishCall();
      const results: Record<Group, { result: EvalResult; threat: ThreatModel; protocol: "B" | "S" }> = {
        B: { result: b.result, threat: linf, protocol: "B" },
        S: { result: s.result, threat: linf, protocol: "S" },
        unseen: { result: u.result, threat: l2, protocol: "S" },
      };
      const cells: Record<string, Cell> = {};
      for (const [key, source] of Object.entries(COLUMN_SOURCES)) {
        const r = results[source.group];
        const label = source.index === "clean"
          ? "clean"
          : source.index === "worst"
          ? "worst case"
          : attacks[source.group][source.index].label;
        cells[key] = cellOf(r.result, r.threat, label, r.protocol);
      }
      const sanity = [b, s, u].flatMap((o) => o.result.sanity);
      const seconds = (performance.now() - rowStarted) / 1000;
      const row: RowResult = {
        key: spec.key,
        label: spec.label,
        stage: spec.stage,
        random,
        cells,
        sanity,
        seconds,
      };
      await run.writeJson(rowFile(spec.key), { fingerprint, row, examples: s.examples } satisfies SavedRow);
      rows.push(row);
      const pct = (c: Cell) => (100 * c.singleDraw.mean).toFixed(1);
      log(
        `  clean ${pct(cells.clean)}  B: FGSM ${pct(cells["B:FGSM"])} PGD ${pct(cells["B:PGD"])}  ` +
          `S: PGD ${pct(cells["S:PGD"])} worst ${pct(cells["S:worst"])}  unseen: l2 ${
            pct(cells["unseen:PGD"])
          } ` +
          `StAdv ${pct(cells["unseen:StAdv"])}  (${seconds.toFixed(0)} s)`,
      );
    } finally {
      m.dispose();
    }
  }
  return {
    columns: comparisonColumns(config),
    rows,
    points: points.length,
    seeds,
    draws: e.draws,
    threats: { linf, l2, stadvBound: e.stadvBound },
    // The rows' times, those of a resumed run's earlier process included.
    seconds: rows.reduce((t, r) => t + r.seconds, 0),
  };
}

/** A finished row as the evaluate stage saves it: its result and its examples (Figure 3). */
interface SavedRow {
  /** What the row was computed from (rowFingerprint): a row made from anything else is redone. */
  fingerprint: string;
  row: RowResult;
  examples: ExampleSet[];
}

/**
 * Bumped when the protocol changes what a row measures (e.g. 2: the worst case's tie rule), so
 * rows saved by older code are evaluated again.
 */
const ROW_FORMAT = 2;

/**
 * What a row depends on: the code's row format, the whole study config (an edited config.json
 * changes it) and the checkpoints it loads, by size and modification time (a stage trained again
 * in the same folder, or another file at --classifier-checkpoint's path, changes it).
 */
async function rowFingerprint(config: StudyConfig, run: RunFolder, spec: RowSpec): Promise<string> {
  const paths = [
    spec.key === "at" ? run.checkpointPath("at") : classifierPath(config, run),
    ...(spec.purifier ? [run.checkpointPath(spec.purifier)] : []),
  ];
  const files = await Promise.all(paths.map(async (path) => {
    const info = await Deno.stat(path).catch(() => null);
    return [path, info?.size ?? null, info?.mtime?.getTime() ?? null];
  }));
  return JSON.stringify({ format: ROW_FORMAT, config, spec, files });
}

function rowFile(key: string): string {
  return `evaluate/${key}.json`;
}

/**
 * A row saved by an earlier process of this run from the same inputs (`fingerprint`), its images
 * back in Float32Arrays; else null.
 */
async function readSavedRow(run: RunFolder, key: string, fingerprint: string): Promise<SavedRow | null> {
  if (!(await run.exists(rowFile(key)))) return null;
  const saved = await run.readJson<SavedRow>(rowFile(key));
  if (saved.fingerprint !== fingerprint) return null;
  for (const set of saved.examples) {
    set.clean = Float32Array.from(set.clean);
    for (const label of Object.keys(set.adversarial)) {
      set.adversarial[label] = Float32Array.from(set.adversarial[label]);
    }
  }
  return saved;
}
