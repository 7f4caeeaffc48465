/**
 * Splitting a robust evaluation over several processes (or machines) and merging the results.
 *
 * The unit of work is a BATCH of the evaluation subset, never a single point: an attack's random
 * start and a random model's draws depend on the batch they run in (Philox counters index the
 * batch's elements), and every batch reseeds all randomness from (seed, batch index). So a
 * shard that runs the same batches as an unsharded run produces bit-identical per-point records,
 * and merging the per-point records of all shards gives exactly the unsharded accuracies.
 */
import { balancedOrder } from "../data/loader.ts";
import type { EvalResult, SeedRun } from "./protocol.ts";
import { summarize } from "./report.ts";
import { resultChecks } from "./sanity.ts";

export type ShardMode = "contiguous" | "strided";

export interface Shard {
  /** 0-based shard index, < count. */
  index: number;
  count: number;
  /** contiguous: shard k gets batches [k·B/n, (k+1)·B/n); strided: batch b goes to shard b mod n. */
  mode: ShardMode;
}

/** Parses "i/n" (0-based i < n), e.g. "0/4" … "3/4". */
export function parseShard(text: string, mode: ShardMode = "contiguous"): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m) throw new RangeError(`shard '${text}' must look like i/n with 0 <= i < n, e.g. 0/4`);
  const index = Number(m[1]), count = Number(m[2]);
  if (count < 1 || index >= count) {
    throw new RangeError(`shard '${text}': need 0 <= i < n (shards are numbered from 0)`);
  }
  return { index, count, mode };
}

/**
 * The evaluation subset: the first `limit` points of the class-balanced order of the split (the
 * same subset `deno task eval --limit` uses), or every point. Positions in this array are the
 * points' identities in results.
 */
export function evaluationPoints(labels: Uint8Array, limit: number | null = null): Uint32Array {
  const order = balancedOrder(labels);
  return limit === null ? order : order.subarray(0, Math.min(limit, order.length));
}

export interface BatchPlan {
  /** Global batch index (seeds derive from it). */
  batch: number;
  /** Positions [start, end) in the evaluation subset. */
  start: number;
  end: number;
}

/** The batches of `count` points, all of them or those of one shard. */
export function planBatches(count: number, batchSize: number, shard: Shard | null = null): BatchPlan[] {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`planBatches: batchSize must be an integer >= 1, got ${batchSize}`);
  }
  const total = Math.ceil(count / batchSize);
  const all: BatchPlan[] = [];
  for (let b = 0; b < total; b++) {
    all.push({ batch: b, start: b * batchSize, end: Math.min(count, (b + 1) * batchSize) });
  }
  if (!shard) return all;
  if (shard.count > total && total > 0) {
    // Legal (some shards are empty), but usually a mistake worth knowing about.
    console.warn(`warning: shard ${shard.index}/${shard.count}: only ${total} batches, some shards get none`);
  }
  if (shard.mode === "strided") return all.filter((b) => b.batch % shard.count === shard.index);
  const from = Math.floor((shard.index * total) / shard.count);
  const to = Math.floor(((shard.index + 1) * total) / shard.count);
  return all.slice(from, to);
}

// ---------------------------------------------------------------------------------------------
// Merging

/** What must agree between shards for their union to be one evaluation, by name. */
function fingerprint(r: EvalResult): Record<string, string> {
  const settings = r.settings.map((s) => ({
    protocol: s.protocol,
    threat: s.threat,
    attacks: s.attacks.map((a) => ({ label: a.label, attack: a.attack, options: a.options })),
    seeds: s.runs.map((run) => run.seed),
  }));
  // The model's key when it has one: the same weights under another path are the same model.
  const { shard: _shard, model, modelKey, ...config } = r.config;
  const parts: Record<string, unknown> = { ...config, model: modelKey ?? model, settings };
  return Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, JSON.stringify(v)]));
}

/** " (shards 1/4, 3/4 missing)" when the results say which shards they are, else "". */
function missingShards(results: EvalResult[]): string {
  const shards = results.map((r) => r.config.shard);
  if (shards.some((s) => !s) || new Set(shards.map((s) => s!.count)).size !== 1) return "";
  const count = shards[0]!.count, present = new Set(shards.map((s) => s!.index));
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !present.has(i));
  return missing.length
    ? ` (shard${missing.length > 1 ? "s" : ""} ${missing.map((i) => `${i}/${count}`).join(", ")} missing)`
    : "";
}

function mergeRuns(runs: SeedRun[], where: string): SeedRun {
  const points = runs.flatMap((run) => run.points).sort((a, b) => a.position - b.position);
  for (let i = 1; i < points.length; i++) {
    if (points[i].position === points[i - 1].position) {
      throw new Error(`merge: point ${points[i].position} appears in two shards (${where})`);
    }
  }
  const first = runs[0];
  return {
    seed: first.seed,
    points,
    attackStats: first.attackStats.map((_, j) => {
      const all = runs.map((run) => run.attackStats[j]);
      return {
        points: all.reduce((n, s) => n + s.points, 0),
        seconds: all.reduce((n, s) => n + s.seconds, 0),
        maxNormRatio: Math.max(...all.map((s) => s.maxNormRatio)),
        minValue: Math.min(...all.map((s) => s.minValue)),
        maxValue: Math.max(...all.map((s) => s.maxValue)),
        nonFinite: all.reduce((n, s) => n + s.nonFinite, 0),
      };
    }),
    cleanSeconds: runs.reduce((n, run) => n + run.cleanSeconds, 0),
  };
}

/** How many points of the evaluation subset a (merged or shard) result holds records for. */
export function coveredPoints(result: Pick<EvalResult, "settings">): number {
  return result.settings[0]?.runs[0]?.points.length ?? 0;
}

/** Options of `mergeResults`. */
export interface MergeOptions {
  /**
   * Merge shards that do not cover the whole evaluation subset (their accuracies are then over
   * the covered points only). Off by default: a table from a forgotten shard looks complete.
   */
  allowPartial?: boolean;
}

/**
 * Combines shard results (the same configuration, disjoint points) into one result whose
 * per-point records, and therefore accuracies, equal an unsharded run's. Timings add up (total
 * compute, not wall time). Shards that do not cover the whole subset are an error naming the
 * missing ones, unless `allowPartial`.
 */
export function mergeResults(results: EvalResult[], { allowPartial = false }: MergeOptions = {}): EvalResult {
  if (results.length === 0) throw new RangeError("merge: no results given");
  const first = results[0];
  const key = fingerprint(first);
  results.forEach((r, i) => {
    if (r.format !== first.format) {
      throw new Error(`merge: result ${i} has format ${r.format}, not ${first.format}`);
    }
    const mine = fingerprint(r);
    const differing = [...new Set([...Object.keys(key), ...Object.keys(mine)])]
      .filter((k) => key[k] !== mine[k])
      .map((k) =>
        k === "settings" ? "settings (attacks, threats or seeds)" : `${k} (${mine[k]} vs ${key[k]})`
      );
    if (differing.length) {
      throw new Error(
        `merge: result ${i} was made with a different configuration than result 0: ${
          differing.join("; ")
        }; ` +
          `only shards of one evaluation can be merged`,
      );
    }
  });
  const settings = first.settings.map((s, k) => ({
    ...s,
    runs: s.runs.map((run, r) =>
      mergeRuns(results.map((res) => res.settings[k].runs[r]), `setting ${k}, seed ${run.seed}`)
    ),
  }));
  const covered = coveredPoints({ settings });
  if (covered !== first.config.points) {
    const gap = `the shards cover ${covered} of ${first.config.points} points${missingShards(results)}`;
    if (!allowPartial) {
      throw new Error(
        `merge: ${gap}; merge every shard of the evaluation, or allow a partial result ` +
          `(\`--allow-partial\`: accuracies over the covered points only)`,
      );
    }
    console.warn(`merge: ${gap}; writing a partial result (accuracies over the covered points only)`);
  }
  const merged: EvalResult = {
    ...first,
    config: { ...first.config, shard: null },
    randomness: first.randomness,
    settings,
    summary: [],
    seconds: results.reduce((n, r) => n + r.seconds, 0),
    sanity: [],
  };
  merged.summary = summarize(merged);
  merged.sanity = resultChecks(merged);
  return merged;
}
