/**
 * Reports of a robust evaluation: the summary computed from per-point records (so merged shards
 * summarise exactly like one run), Markdown tables, and files: result.json, result.md,
 * examples.safetensors (clean and adversarial images, f32) and one PNG grid per setting
 * (rows: clean, adversarial, |δ| magnified).
 */
import { join } from "node:path";
import type { ThreatModel } from "../attacks/types.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { imageGrid, writePng } from "../io/png.ts";
import { markdownTable, writeJson } from "../io/report.ts";
import { encodeSafetensors, type SafetensorsInput } from "../io/safetensors.ts";
import type { EvalResult, EvaluationOutput, ExampleSet, Outcome, PointRecord, Protocol } from "./protocol.ts";

/** Mean ± sample standard deviation over attack seeds, and the per-seed values. */
export interface Stat {
  mean: number;
  std: number;
  perSeed: number[];
}

export interface SummaryRow {
  protocol: Protocol;
  threat: ThreatModel;
  /** "clean", an attack's label, or "worst case". */
  label: string;
  kind: "clean" | "attack" | "worst";
  /** Points counted (per seed). */
  n: number;
  /** Accuracy of one draw of the model's randomness (the mean over R draws), in [0, 1]. */
  singleDraw: Stat;
  /** Accuracy of the majority vote over R draws, in [0, 1]. */
  majority: Stat;
  /** Attack seconds per seed (mean); null for clean and worst-case rows. */
  seconds: number | null;
  /** Points the attack ran on per seed (mean): fewer than n in a sequential suite; null as seconds. */
  attacked?: number | null;
  /** Set when the attack ran once for several threat models (StAdv): the setting it ran in. */
  reusedFrom?: string;
  /**
   * Per point (in evaluation order): the fraction of draws that were correct, averaged over
   * seeds; null where a sequential suite skipped the point. Lets two rows evaluated on the same
   * points be compared point by point (a paired test: much tighter than comparing two means).
   */
  perPoint: (number | null)[];
}

/** The summary row of an attack label in a setting (matched by value: results may be reloaded JSON). */
export function findRow(
  result: EvalResult,
  setting: { protocol: Protocol; threat: ThreatModel },
  label: string,
): SummaryRow | undefined {
  return result.summary.find((r) =>
    r.label === label && r.protocol === setting.protocol && r.threat.norm === setting.threat.norm &&
    r.threat.eps === setting.threat.eps
  );
}

/** "linf 8/255" style label (eps as a fraction of 255 when it is one). */
export function threatLabel(t: ThreatModel): string {
  const k = t.eps * 255;
  const eps = Math.abs(k - Math.round(k)) < 1e-6 && Math.round(k) !== 0 && t.norm === "linf"
    ? `${Math.round(k)}/255`
    : String(Number(t.eps.toPrecision(6)));
  return `${t.norm} ${eps}`;
}

/** True when `a` is a better candidate for the attacker than `b` (fewer correct draws). */
export function worseForDefence(a: Outcome, b: Outcome): boolean {
  return a.correct < b.correct || (a.correct === b.correct && !a.vote && b.vote);
}

function stat(values: number[]): Stat {
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  const std = values.length > 1
    ? Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (values.length - 1))
    : 0;
  return { mean, std, perSeed: values };
}

function accuracies(outcomes: Outcome[], draws: number): { single: number; majority: number } {
  if (outcomes.length === 0) return { single: NaN, majority: NaN };
  const correct = outcomes.reduce((s, o) => s + o.correct, 0);
  const votes = outcomes.reduce((s, o) => s + (o.vote ? 1 : 0), 0);
  return { single: correct / (draws * outcomes.length), majority: votes / outcomes.length };
}

/**
 * Summary rows per setting: clean, each attack, the worst case. In sequential (AutoAttack-style)
 * suites an attack's row is the robust accuracy AFTER it (worst case over clean and the
 * norm-bounded attacks so far), as AutoAttack prints; otherwise it is the attack on its own. On a
 * random model those cumulative rows are scored on the selection draws (the minimum of noisy
 * outcomes, biased low); the worst-case row alone is re-evaluated on fresh draws.
 */
export function summarize(result: EvalResult): SummaryRow[] {
  const rows: SummaryRow[] = [];
  const { draws, sequential, random } = result.config;
  for (const s of result.settings) {
    const row = (
      label: string,
      kind: SummaryRow["kind"],
      pick: (p: PointRecord) => Outcome | null,
      seconds: number | null,
    ): SummaryRow => {
      const perSeed = s.runs.map((run) => {
        const outs = run.points.map(pick).filter((o): o is Outcome => o !== null);
        return { n: outs.length, ...accuracies(outs, draws) };
      });
      // Per point position, its outcome in every seed (a missing or skipped one makes it null).
      const byPosition = new Map<number, (Outcome | null)[]>();
      for (const run of s.runs) {
        for (const p of run.points) {
          byPosition.set(p.position, [...byPosition.get(p.position) ?? [], pick(p)]);
        }
      }
      const perPoint = [...byPosition].sort((a, b) => a[0] - b[0]).map(([, outs]) =>
        outs.length === s.runs.length && outs.every((o) => o)
          ? outs.reduce((t, o) => t + o!.correct / draws, 0) / outs.length
          : null
      );
      return {
        protocol: s.protocol,
        threat: s.threat,
        label,
        kind,
        n: perSeed[0]?.n ?? 0,
        singleDraw: stat(perSeed.map((p) => p.single)),
        majority: stat(perSeed.map((p) => p.majority)),
        seconds,
        perPoint,
      };
    };
    rows.push(row("clean", "clean", (p) => p.clean, null));
    s.attacks.forEach((a, j) => {
      const seconds = s.runs.reduce((t, run) => t + run.attackStats[j].seconds, 0) / s.runs.length;
      const cumulative = sequential && a.bound === "norm";
      const attackRow = row(a.label, "attack", (p) => {
        const own = p.attacks[j];
        // A deterministic model's robust accuracy counts a point only if the clean image is
        // right too (an attack that turned a wrong point right did not make it robust). On a
        // random model the two outcomes come from different draws: the minimum of two noisy
        // counts would be biased down, so a row keeps the attack's own (the worst case re-draws).
        if (!cumulative) {
          return !random && own && a.bound === "norm" && worseForDefence(p.clean, own) ? p.clean : own;
        }
        let best = p.clean;
        for (let k = 0; k <= j; k++) {
          const o = p.attacks[k];
          if (s.attacks[k].bound === "norm" && o && worseForDefence(o, best)) best = o;
        }
        return best;
      }, seconds);
      if (a.reusedFrom) attackRow.reusedFrom = a.reusedFrom;
      attackRow.attacked = s.runs.reduce((t, run) => t + run.attackStats[j].points, 0) / s.runs.length;
      rows.push(attackRow);
    });
    if (s.attacks.some((a) => a.bound === "norm")) {
      rows.push(row("worst case", "worst", (p) => p.worst, null));
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Markdown

function pct(s: Stat, seeds: number): string {
  if (!Number.isFinite(s.mean)) return "–";
  const m = (100 * s.mean).toFixed(1);
  return seeds > 1 ? `${m} ± ${(100 * s.std).toFixed(1)}` : m;
}

function settingName(protocol: Protocol, threat: ThreatModel, protocols: Set<Protocol>): string {
  return protocols.size > 1 || protocol === "B" ? `${protocol}: ${threatLabel(threat)}` : threatLabel(threat);
}

function formatSeconds(s: number | null): string {
  return s === null ? "" : s >= 100 ? s.toFixed(0) : s.toFixed(1);
}

/**
 * The compact table: one row per attack, one accuracy column per setting (single-draw /
 * majority for random models), then attack time per setting.
 */
export function accuracyTable(result: EvalResult): string {
  const { random, seeds } = result.config;
  const protocols = new Set(result.settings.map((s) => s.protocol));
  const names = result.settings.map((s) => settingName(s.protocol, s.threat, protocols));
  const labels: string[] = [];
  for (const r of result.summary) if (!labels.includes(r.label)) labels.push(r.label);
  const headers = [
    "attack",
    ...names.map((n) => `${n} acc %${random ? " (single / vote)" : ""}`),
    ...names.map((n) => `${n} s`),
  ];
  const rows = labels.map((label) => {
    const cells = result.settings.map((s) => findRow(result, s, label));
    return [
      label,
      ...cells.map((r) =>
        r
          ? random
            ? `${pct(r.singleDraw, seeds.length)} / ${pct(r.majority, seeds.length)}`
            : pct(r.majority, seeds.length)
          : "–"
      ),
      ...cells.map((r) => r?.reusedFrom ? `(= ${r.reusedFrom})` : formatSeconds(r?.seconds ?? null)),
    ];
  });
  return markdownTable(headers, rows);
}

/** One row per setting and attack, with sample size and times. */
export function detailTable(result: EvalResult): string {
  const seeds = result.config.seeds.length;
  return markdownTable(
    ["protocol", "threat", "attack", "n", "single-draw acc %", "majority acc %", "attack s", "ms / point"],
    result.summary.map((r) => [
      r.protocol,
      threatLabel(r.threat),
      r.label,
      r.n,
      pct(r.singleDraw, seeds),
      pct(r.majority, seeds),
      r.reusedFrom ? `(= ${r.reusedFrom})` : formatSeconds(r.seconds),
      // Per point attacked (a sequential suite's later attacks see only the points still robust).
      r.seconds !== null && (r.attacked ?? r.n) > 0 && !r.reusedFrom
        ? (1000 * r.seconds / (r.attacked ?? r.n)).toFixed(1)
        : "",
    ]),
  );
}

export function sanityTable(result: EvalResult): string {
  if (result.sanity.length === 0) return "";
  return markdownTable(
    ["check", "verdict", "detail"],
    result.sanity.map((c) => [c.name, c.passed === null ? "skipped" : c.passed ? "pass" : "FAIL", c.detail]),
  );
}

/** The whole Markdown report. */
export function markdownReport(result: EvalResult, title = "Robust evaluation"): string {
  const c = result.config;
  // The points this result covers: a shard's (or a partial merge's), not the whole evaluation's.
  const n = result.settings[0]?.runs[0]?.points.length ?? c.points;
  const sigma = (p: number) => (100 * Math.sqrt(p * (1 - p) / n)).toFixed(1);
  const lines = [
    `# ${title}`,
    "",
    `- model: ${c.model}; data: ${c.dataset}, ${n} points (class-balanced subset${
      c.limit ? `, limit ${c.limit}` : ""
    })${c.shard ? `; shard ${c.shard.index}/${c.shard.count} (${c.shard.mode})` : ""}`,
    `- ${c.random ? "RANDOM model" : "deterministic model"} (${result.randomness.source}${
      result.randomness.source === "detected"
        ? `: ${result.randomness.predictionChanges}/${result.randomness.points} predictions changed over ${result.randomness.passes} passes`
        : ""
    }); ${c.draws} draw(s) per candidate; attack seeds ${c.seeds.join(", ")}${
      c.sequential
        ? `; sequential (attacks run on the points still robust; each attack's row is the robust accuracy ` +
          `after it${
            c.random
              ? `, scored on the draws that picked the candidates: only the worst-case row is re-evaluated on ` +
                `fresh draws, so the rows above it read low`
              : ""
          })`
        : ""
    }`,
    `- sample size: n = ${n} (1 sigma = ${sigma(0.5)} points at p = 0.5, ${sigma(0.9)} at p = 0.9)` +
    `${c.seeds.length > 1 ? "; ± is the sample std (n − 1) over attack seeds" : ""}`,
    `- wall time ${result.seconds.toFixed(1)} s`,
    "",
    accuracyTable(result),
    "## Details",
    "",
    detailTable(result),
  ];
  const sanity = sanityTable(result);
  if (sanity) lines.push("## Sanity checks", "", sanity);
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Files

function fileKey(e: { protocol: Protocol; threat: ThreatModel }): string {
  return `${e.protocol}-${e.threat.norm}-${Number(e.threat.eps.toPrecision(6))}`;
}

/**
 * The grid of one example set: row 1 clean; then per shown attack a row of adversarial images
 * and a row of |δ|·k with k = 1 / max|δ| over that row (so the largest change is white).
 * Points an attack skipped (NaN) show the clean image and zero change. Returns k per attack.
 */
export function exampleGrid(
  set: ExampleSet,
  attacks: string[],
  options: { cols?: number; scale?: number } = {},
): { image: ReturnType<typeof imageGrid>; magnification: Record<string, number> } {
  const [c, h, w] = set.shape;
  const d = c * h * w, count = set.positions.length;
  const rows: Float32Array[] = [set.clean];
  const magnification: Record<string, number> = {};
  for (const label of attacks) {
    const adv = set.adversarial[label].slice();
    const delta = new Float32Array(adv.length);
    let maxDelta = 0;
    for (let e = 0; e < adv.length; e++) {
      if (!Number.isFinite(adv[e])) adv[e] = set.clean[e];
      delta[e] = Math.abs(adv[e] - set.clean[e]);
      maxDelta = Math.max(maxDelta, delta[e]);
    }
    const k = maxDelta > 0 ? 1 / maxDelta : 1;
    for (let e = 0; e < delta.length; e++) delta[e] *= k;
    magnification[label] = k;
    rows.push(adv, delta);
  }
  const all = new Float32Array(rows.length * count * d);
  rows.forEach((r, i) => all.set(r, i * count * d));
  const image = imageGrid(all, [rows.length * count, c, h, w], {
    cols: options.cols ?? count,
    scale: options.scale ?? (h <= 32 ? 2 : 1),
    pad: 2,
  });
  return { image, magnification };
}

export interface WriteReportOptions {
  title?: string;
  /** Attacks shown in each grid: "strongest" (default; lowest robust accuracy) or "all". */
  gridAttacks?: "strongest" | "all";
  /** Images per grid row (default: all kept examples, at most 16). */
  gridColumns?: number;
}

export interface WrittenReport {
  json: string;
  markdown: string;
  examples: string | null;
  grids: string[];
}

/**
 * Writes result.json, result.md, examples.safetensors and grid-<protocol>-<norm>-<eps>.png into
 * `dir` (created). The Markdown also goes to the return value's path for printing.
 */
export async function writeEvaluationReport(
  dir: string,
  output: EvaluationOutput,
  options: WriteReportOptions = {},
): Promise<WrittenReport> {
  const { result, examples } = output;
  await Deno.mkdir(dir, { recursive: true });
  const json = join(dir, "result.json"), markdown = join(dir, "result.md");
  await writeJson(json, result);
  let md = markdownReport(result, options.title);
  const grids: string[] = [];
  let examplesPath: string | null = null;
  if (examples.length > 0) {
    const entries: Record<string, SafetensorsInput> = {};
    const first = examples[0];
    const shape = [first.positions.length, ...first.shape];
    entries["clean"] = { dtype: "F32", shape, data: first.clean };
    entries["labels"] = { dtype: "I32", shape: [first.labels.length], data: Int32Array.from(first.labels) };
    entries["positions"] = {
      dtype: "I32",
      shape: [first.positions.length],
      data: Int32Array.from(first.positions),
    };
    const gridNotes: string[] = [];
    for (const set of examples) {
      for (const [label, adv] of Object.entries(set.adversarial)) {
        entries[`${fileKey(set)}/${label}`] = {
          dtype: "F32",
          shape: [set.positions.length, ...set.shape],
          data: adv,
        };
      }
      const normAttacks = result.settings.find((s) =>
        s.protocol === set.protocol && s.threat.norm === set.threat.norm && s.threat.eps === set.threat.eps
      )?.attacks.filter((a) =>
        a.bound === "norm"
      ).map((a) => a.label) ?? [];
      let shown = Object.keys(set.adversarial).filter((l) => normAttacks.includes(l));
      if (options.gridAttacks !== "all" && shown.length > 1) {
        const acc = (l: string) => findRow(result, set, l)?.majority.mean ?? 1;
        shown = [shown.reduce((a, b) => (acc(b) < acc(a) ? b : a))];
      }
      if (shown.length === 0) shown = Object.keys(set.adversarial).slice(0, 1);
      if (shown.length === 0) continue;
      const cols = Math.min(options.gridColumns ?? 16, set.positions.length);
      const trimmed: ExampleSet = {
        ...set,
        positions: set.positions.slice(0, cols),
        clean: set.clean.subarray(0, cols * set.shape[0] * set.shape[1] * set.shape[2]),
        adversarial: Object.fromEntries(
          shown.map((
            l,
          ) => [l, set.adversarial[l].subarray(0, cols * set.shape[0] * set.shape[1] * set.shape[2])]),
        ),
      };
      const { image, magnification } = exampleGrid(trimmed, shown, { cols });
      const path = join(dir, `grid-${fileKey(set)}.png`);
      await writePng(path, image);
      grids.push(path);
      gridNotes.push(
        `- ${path.split("/").pop()}: rows clean, then per attack adversarial and |δ|·k (` +
          shown.map((l) => `${l}: k = ${magnification[l].toFixed(1)}`).join(", ") + ")",
      );
    }
    examplesPath = join(dir, "examples.safetensors");
    await writeFileAtomic(
      examplesPath,
      encodeSafetensors(entries, {
        format: "atop-adversarial-examples/1",
        settings: JSON.stringify(examples.map((e) => ({ protocol: e.protocol, threat: e.threat }))),
      }),
    );
    md += "\n## Examples\n\n" +
      `- examples.safetensors: clean, labels, positions and <protocol>-<norm>-<eps>/<attack>\n` +
      gridNotes.join("\n") + "\n";
  }
  await writeFileAtomic(markdown, new TextEncoder().encode(md));
  return { json, markdown, examples: examplesPath, grids };
}
