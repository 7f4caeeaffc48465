/**
 * The robust-evaluation protocol (docs ATTACKS.md, "Protocol for random defences").
 *
 * One call evaluates clean accuracy and robust accuracy under several threat models, attacks,
 * attack seeds and protocols, and keeps a record per point, so that
 * - a random model is evaluated honestly: every candidate is re-evaluated with R fresh draws of
 *   the model's randomness; we report the single-draw accuracy (mean over draws) AND the
 *   majority-vote accuracy (the most frequent prediction), each as mean ± std over attack seeds;
 * - the per-point worst case over attacks ("robust accuracy", as AutoAttack reports it) picks,
 *   per point, the candidate that did best for the attacker (clean image included), and
 *   re-evaluates it with fresh draws, so the selection among noisy outcomes does not bias it;
 * - shards of the evaluation merge exactly (see shard.ts).
 *
 * Protocols: "S" attacks the full model (full-gradient EOT through every stage); "B" attacks a
 * given sub-model (e.g. the classifier alone, ignoring a purifier) and evaluates the full model
 * on those examples — what the AToP notebooks measure, an upper bound on robustness.
 *
 * Attacks never read back (the contract); this harness does, once or twice per attack and batch,
 * to record outcomes and to check bounds on the host.
 */
import type { AttackFn, Model, ThreatModel } from "../attacks/types.ts";
import { noGrad } from "../autograd/tape.ts";
import type { Dataset } from "../data/dataset.ts";
import { fromArray } from "../ops/creation.ts";
import { defaultGenerator, manualSeed } from "../ops/random.ts";
import { argmax } from "../ops/reduce_extra.ts";
import { concat } from "../ops/shape_ops.ts";
import { tidy } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { type AttackEntry, resolveAttack } from "../attacks/registry.ts";
import { resultChecks, type SanityCheck } from "./sanity.ts";
import { planBatches, type Shard } from "./shard.ts";
import { summarize, type SummaryRow, threatLabel, worseForDefence } from "./report.ts";

// ---------------------------------------------------------------------------------------------
// Types (the JSON result is made of these; keep them plain data)

export type Protocol = "S" | "B";

export type { AttackEntry };

/** How one point fared on one candidate over R draws of the model's randomness. */
export interface Outcome {
  /** Number of draws (of R) that classified the candidate correctly. */
  correct: number;
  /** Whether the most frequent prediction over the R draws is the label (ties: smallest class). */
  vote: boolean;
}

export interface PointRecord {
  /** Position in the evaluation subset (identity of the point across shards). */
  position: number;
  /** Index in the dataset split. */
  index: number;
  label: number;
  clean: Outcome;
  /** Per attack (setting order); null where a sequential suite skipped an already broken point. */
  attacks: (Outcome | null)[];
  /** The per-point worst case over clean + norm-bounded attacks, re-evaluated (random models). */
  worst: Outcome;
  /** Which candidate the worst case took: -1 clean, else the attack's index. */
  worstFrom: number;
  /** Per-draw predictions, only with `recordPredictions` (clean, then per attack; null if skipped). */
  predictions?: { clean: number[]; attacks: (number[] | null)[]; worst: number[] };
}

/** Per attack and seed: cost and the bound checks (exactly mergeable: sums, maxima, minima). */
export interface AttackStats {
  /** Points attacked. */
  points: number;
  /** Attack time (the attack itself, GPU work included; not the evaluation draws). */
  seconds: number;
  /** max over points of ‖x_adv − x‖ / eps in the threat's norm (≤ 1 expected; 0 for spatial). */
  maxNormRatio: number;
  minValue: number;
  maxValue: number;
  /** NaN or ±Inf values in x_adv. */
  nonFinite: number;
}

export interface SeedRun {
  seed: number;
  points: PointRecord[];
  attackStats: AttackStats[];
  cleanSeconds: number;
}

export interface SettingRecord {
  protocol: Protocol;
  threat: ThreatModel;
  attacks: {
    label: string;
    attack: string;
    options: Record<string, unknown>;
    bound: "norm" | "spatial";
    /** Threat-independent attack whose records (and time) were copied from this earlier setting. */
    reusedFrom?: string;
  }[];
  runs: SeedRun[];
}

export interface RandomnessReport {
  /** Predictions or logits changed over `passes` passes on the same inputs. */
  random: boolean;
  passes: number;
  points: number;
  /** Points whose predicted class changed between passes. */
  predictionChanges: number;
  maxLogitChange: number;
  /** How `random` was decided. */
  source: "detected" | "given";
}

export interface EvalConfig {
  /** What was evaluated (free text, e.g. checkpoint and architecture; part of the merge check). */
  model: string;
  /** When set, the merge check compares this instead of `model` (see EvaluateOptions.modelKey). */
  modelKey?: string;
  dataset: string;
  /** Size of the whole evaluation subset (all shards). */
  points: number;
  limit: number | null;
  batchSize: number;
  /** R: draws of the model's randomness per candidate (1 for deterministic models). */
  draws: number;
  random: boolean;
  seeds: number[];
  sequential: boolean;
  shard: Shard | null;
}

export interface EvalResult {
  format: "atop-robust-eval/1";
  config: EvalConfig;
  randomness: RandomnessReport;
  settings: SettingRecord[];
  summary: SummaryRow[];
  /** Wall time of this process's evaluation. */
  seconds: number;
  /** Bound checks (norm ≤ eps, [0,1], finite) per attack, and any further sanity checks. */
  sanity: SanityCheck[];
}

/** Host copies of a few points' images for reports (first seed, first points of the run). */
export interface ExampleSet {
  protocol: Protocol;
  threat: ThreatModel;
  shape: [number, number, number];
  positions: number[];
  labels: number[];
  clean: Float32Array;
  /** Per attack label: the adversarial images (absent for points a sequential suite skipped: NaN). */
  adversarial: Record<string, Float32Array>;
  /** Per attack label: predictions of the first draw on each example. */
  predictions: Record<string, number[]>;
}

export interface EvaluationOutput {
  result: EvalResult;
  examples: ExampleSet[];
}

export interface EvaluateOptions {
  /** The model evaluated (for protocol "S" also the one attacked). Eval mode. May be random. */
  model: Model;
  /** Protocol "B": the sub-model the attacks see (e.g. the classifier without the purifier). */
  subModel?: Model;
  /** Host dataset and the dataset indices of the evaluation subset, in order. */
  dataset: Dataset;
  points: Uint32Array;
  threats: ThreatModel[];
  attacks: AttackEntry[];
  /** Default ["S"]. */
  protocols?: Protocol[];
  /** Attack seeds; default [0], or [0, 1, 2] for a random model. */
  seeds?: number[];
  /** R; default 1 for a deterministic model, 10 for a random one. */
  draws?: number;
  /** true/false, or "auto" (default): detect with 5 passes over the first points. */
  random?: boolean | "auto";
  /** AutoAttack style: each attack runs only on the points still robust (majority vote). */
  sequential?: boolean;
  batchSize?: number;
  shard?: Shard | null;
  limit?: number | null;
  /** Names for the config (merge check and reports). */
  modelName?: string;
  /**
   * What identifies the model in the merge check when `modelName` holds something that may differ
   * between shards of one evaluation (a checkpoint's path): e.g. a hash of the weights.
   */
  modelKey?: string;
  datasetName?: string;
  /** Keep host copies of the first `examples` points per setting (default 16). */
  examples?: number;
  /** Record per-draw predictions per point (tests, debugging). */
  recordPredictions?: boolean;
  /** Called after every attack on every batch. */
  onProgress?: (done: number, total: number, fields: Record<string, string | number>) => void;
  /** Warnings (default console.warn). */
  warn?: (message: string) => void;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** A 32-bit mix of integers (splitmix-style), for per-batch, per-attack seeds. */
export function mixSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    let v = (Math.floor(p) ^ Math.floor(p / 2 ** 32)) >>> 0;
    v = Math.imul(v ^ (v >>> 16), 0x85ebca6b) >>> 0;
    v = Math.imul(v ^ (v >>> 13), 0xc2b2ae35) >>> 0;
    h = Math.imul(h ^ (v ^ (v >>> 16)), 0x27d4eb2f) >>> 0;
    h = (h ^ (h >>> 15)) >>> 0;
  }
  return h;
}

/** Seed "phases" of one batch: every phase reseeds all randomness, so batches are independent. */
const PHASE_CLEAN = 1000, PHASE_WORST = 2000, PHASE_EVAL = 3000, PHASE_DETECT = 4000, PHASE_ATTACKED = 5000;

/**
 * Seeds the default generator, which a random defence draws from, for an attack run with
 * `attackSeed`. Its key differs from the attack's own (random starts and restarts draw from
 * (attackSeed, restart)): seeded alike, the defence's first noise would be built from the same
 * bits as the attack's start, not a fresh draw.
 */
export function seedAttackedModel(attackSeed: number): void {
  manualSeed(mixSeed(attackSeed, PHASE_ATTACKED));
}

/** Uploads the images of dataset indices as f32 [n, C, H, W] in [0, 1], and i32 labels. */
export function uploadPoints(dataset: Dataset, indices: ArrayLike<number>): { x: Tensor; y: Tensor } {
  const [c, h, w] = dataset.shape;
  const d = c * h * w;
  const images = new Float32Array(indices.length * d);
  const labels = new Int32Array(indices.length);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    const bytes = dataset.images.subarray(i * d, (i + 1) * d);
    for (let e = 0; e < d; e++) images[k * d + e] = bytes[e] / 255;
    labels[k] = dataset.labels[i];
  }
  return { x: fromArray(images, [indices.length, c, h, w]), y: fromArray(labels, [indices.length], "i32") };
}

/** Predicted classes over `draws` calls of the model (fresh randomness each): i32 [draws, n]. */
export function predictDraws(model: Model, x: Tensor, draws: number): Tensor {
  return tidy(() =>
    noGrad(() => {
      const n = x.shape[0];
      const preds: Tensor[] = [];
      for (let r = 0; r < draws; r++) preds.push(argmax(model(x), 1).alias([1, n]));
      return preds.length === 1 ? preds[0] : concat(preds, 0);
    })
  );
}

/** Outcomes from per-draw predictions [draws · n] (draw-major) and labels. */
export function outcomes(preds: ArrayLike<number>, labels: ArrayLike<number>, draws: number): Outcome[] {
  const n = labels.length;
  const out: Outcome[] = [];
  for (let i = 0; i < n; i++) {
    const votes = new Map<number, number>();
    let correct = 0;
    for (let r = 0; r < draws; r++) {
      const p = preds[r * n + i];
      if (p === labels[i]) correct++;
      votes.set(p, (votes.get(p) ?? 0) + 1);
    }
    // The vote is correct only when the label has strictly the most votes: a tie (5 of 10 draws
    // each for two classes) is no robust prediction, whatever the classes' numbers.
    let vote = correct > 0;
    for (const [cls, count] of votes) if (cls !== labels[i] && count >= correct) vote = false;
    out.push({ correct, vote });
  }
  return out;
}

/** Column of per-draw predictions of point i (for records). */
function column(preds: ArrayLike<number>, n: number, draws: number, i: number): number[] {
  return Array.from({ length: draws }, (_, r) => preds[r * n + i]);
}

/**
 * Runs the model `passes` times on the same inputs and compares: a deterministic model gives
 * identical logits every time; a random defence (noise, masks, random transforms) does not.
 */
export async function detectRandomness(
  model: Model,
  x: Tensor,
  passes = 5,
  seed = 0,
): Promise<RandomnessReport> {
  manualSeed(mixSeed(seed, PHASE_DETECT));
  const all = tidy(() => noGrad(() => concat(Array.from({ length: passes }, () => model(x)), 0)));
  const logits = await all.toArray() as Float32Array;
  all.dispose();
  const n = x.shape[0], k = logits.length / (passes * n);
  let maxChange = 0, changes = 0;
  for (let i = 0; i < n; i++) {
    let changed = false, firstArg = -1;
    for (let p = 0; p < passes; p++) {
      let arg = 0;
      for (let c = 0; c < k; c++) {
        const v = logits[(p * n + i) * k + c], v0 = logits[i * k + c];
        maxChange = Math.max(maxChange, Math.abs(v - v0) / (1 + Math.abs(v0)));
        if (v > logits[(p * n + i) * k + arg]) arg = c;
      }
      if (p === 0) firstArg = arg;
      else if (arg !== firstArg) changed = true;
    }
    if (changed) changes++;
  }
  return {
    random: changes > 0 || maxChange > 1e-5,
    passes,
    points: n,
    predictionChanges: changes,
    maxLogitChange: maxChange,
    source: "detected",
  };
}

/** Per-point bound statistics of x_adv against x on the host. */
function boundStats(
  xAdv: Float32Array,
  x: Float32Array,
  n: number,
  threat: ThreatModel,
  bound: "norm" | "spatial",
): Omit<AttackStats, "points" | "seconds"> {
  const d = x.length / n;
  let maxRatio = 0, minValue = Infinity, maxValue = -Infinity, nonFinite = 0;
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let e = i * d; e < (i + 1) * d; e++) {
      const v = xAdv[e];
      if (!Number.isFinite(v)) {
        nonFinite++;
        continue;
      }
      if (v < minValue) minValue = v;
      if (v > maxValue) maxValue = v;
      const delta = Math.abs(v - x[e]);
      norm = threat.norm === "linf" ? Math.max(norm, delta) : norm + delta * delta;
    }
    if (threat.norm === "l2") norm = Math.sqrt(norm);
    if (bound === "norm") {
      maxRatio = Math.max(maxRatio, threat.eps > 0 ? norm / threat.eps : norm > 0 ? Infinity : 0);
    }
  }
  return { maxNormRatio: maxRatio, minValue, maxValue, nonFinite };
}

// ---------------------------------------------------------------------------------------------
// The evaluation

interface ResolvedAttack {
  entry: AttackEntry;
  fn: AttackFn;
  name: string;
  options: Record<string, unknown>;
  bound: "norm" | "spatial";
}

/**
 * EOT draws of every registered attack on a random defence unless its options set them
 * (ATTACKS.md: the EOT gradient is "used by every gradient attack", StAdv and Lee & Kim's PGD
 * with 20; Square averages "the loss over ~20 forward passes per candidate"). With one draw a
 * gradient attack follows the noise of that draw, and Square lets a candidate that got a lucky
 * draw set the bar so later real improvements are rejected: either way robustness is overstated
 * (and white-box attacks would be handicapped against Square in the sanity checks).
 */
export const EOT_ON_RANDOM = 20;

/** The options an attack runs with: EOT draws against a random model unless set. */
function effectiveOptions(a: ResolvedAttack, attacksRandomModel: boolean): Record<string, unknown> {
  const registered = typeof a.entry.attack === "string";
  return attacksRandomModel && registered && a.options.eot === undefined
    ? { ...a.options, eot: EOT_ON_RANDOM }
    : a.options;
}

function resolveEntries(entries: AttackEntry[]): ResolvedAttack[] {
  const labels = new Set<string>();
  return entries.map((entry) => {
    if (labels.has(entry.label)) throw new RangeError(`evaluate: two attacks are labelled '${entry.label}'`);
    labels.add(entry.label);
    if (typeof entry.attack === "function") {
      return {
        entry,
        fn: entry.attack,
        name: entry.attack.name || entry.label,
        options: { ...entry.options },
        bound: entry.bound ?? "norm",
      };
    }
    const r = resolveAttack(entry.attack, entry.options ?? {});
    return { entry, fn: r.fn, name: entry.attack, options: r.options, bound: entry.bound ?? r.bound };
  });
}

function emptyStats(): AttackStats {
  return { points: 0, seconds: 0, maxNormRatio: 0, minValue: Infinity, maxValue: -Infinity, nonFinite: 0 };
}

/**
 * Evaluates clean and robust accuracy (see the file comment). Deterministic given its inputs:
 * every batch reseeds the default generator and the attacks' seeds from (seed, batch, phase),
 * and the previous state of the default generator is restored at the end.
 */
export async function evaluateRobustness(options: EvaluateOptions): Promise<EvaluationOutput> {
  const started = performance.now();
  const warn = options.warn ?? ((m: string) => console.warn(`warning: ${m}`));
  const protocols = options.protocols ?? ["S"];
  if (protocols.includes("B") && !options.subModel) {
    throw new RangeError(
      'evaluate: protocol "B" attacks a sub-model: pass subModel (e.g. the classifier alone)',
    );
  }
  if (options.threats.length === 0) throw new RangeError("evaluate: no threat model given");
  for (const t of options.threats) {
    if (!(t.eps >= 0) || (t.norm !== "linf" && t.norm !== "l2")) {
      throw new RangeError(`evaluate: bad threat model ${JSON.stringify(t)} (norm linf|l2, eps >= 0)`);
    }
  }
  const attacks = resolveEntries(options.attacks);
  const batchSize = options.batchSize ?? 100;
  const total = options.points.length;
  if (total === 0) throw new RangeError("evaluate: the evaluation subset is empty");
  const saved = { seed: defaultGenerator.seed, stream: defaultGenerator.stream };
  const { dataset } = options;
  const [channels, height, width] = dataset.shape;
  const pointSize = channels * height * width;

  try {
    // 1. Is the model random? (5 passes over the first points of the whole subset, not the shard.)
    let randomness: RandomnessReport;
    if (options.random === undefined || options.random === "auto") {
      const probe = uploadPoints(dataset, options.points.subarray(0, Math.min(64, total)));
      randomness = await detectRandomness(options.model, probe.x);
      probe.x.dispose();
      probe.y.dispose();
      if (randomness.random) {
        warn(
          `the model is random (${randomness.predictionChanges}/${randomness.points} predictions changed over ` +
            `${randomness.passes} passes): using the random-defence protocol (fresh draws, single-draw and ` +
            `majority-vote accuracy, several attack seeds)`,
        );
      }
    } else {
      randomness = {
        random: options.random,
        passes: 0,
        points: 0,
        predictionChanges: 0,
        maxLogitChange: 0,
        source: "given",
      };
    }
    const random = randomness.random;
    const draws = options.draws ?? (random ? 10 : 1);
    const seeds = options.seeds ?? (random ? [0, 1, 2] : [0]);
    if (random && draws < 10) {
      warn(
        `random model evaluated with only ${draws} draws per candidate (ATTACKS.md: R = 10-20); ` +
          `the worst case, picked on few noisy draws, may come out above single attacks`,
      );
    }
    if (random && seeds.length < 3) {
      warn(`random model evaluated with ${seeds.length} attack seed(s) (use >= 3)`);
    }
    const sequential = options.sequential ?? false;
    const plan = planBatches(total, batchSize, options.shard ?? null);
    const keepExamples = options.examples ?? 16;

    const settings: SettingRecord[] = [];
    const examples: ExampleSet[] = [];
    const units = protocols.length * options.threats.length * seeds.length * plan.length *
      (attacks.length + 1);
    let done = 0;

    for (const protocol of protocols) {
      const attacked = protocol === "S" ? options.model : options.subModel!;
      // Protocol B attacks the classifier alone, which is deterministic.
      const optionsOf = (a: ResolvedAttack) => effectiveOptions(a, protocol === "S" && random);
      for (const threat of options.threats) {
        // Threat-independent attacks already run in this protocol: reuse their records.
        const reuse = attacks.map((a) =>
          a.entry.threatIndependent ? settings.find((s) => s.protocol === protocol) ?? null : null
        );
        const setting: SettingRecord = {
          protocol,
          threat: { ...threat },
          attacks: attacks.map((a, j) => ({
            label: a.entry.label,
            attack: a.name,
            options: jsonOptions(optionsOf(a)),
            bound: a.bound,
            ...(reuse[j] ? { reusedFrom: threatLabel(reuse[j]!.threat) } : {}),
          })),
          runs: [],
        };
        const exampleSet: ExampleSet | null = keepExamples > 0
          ? {
            protocol,
            threat: { ...threat },
            shape: [channels, height, width],
            positions: [],
            labels: [],
            clean: new Float32Array(0),
            adversarial: {},
            predictions: {},
          }
          : null;

        for (const [seedIndex, seed] of seeds.entries()) {
          const run: SeedRun = { seed, points: [], attackStats: attacks.map(emptyStats), cleanSeconds: 0 };
          for (const batch of plan) {
            const positions = Array.from({ length: batch.end - batch.start }, (_, k) => batch.start + k);
            const indices = positions.map((p) => options.points[p]);
            const labels = indices.map((i) => dataset.labels[i]);
            const n = positions.length;
            const { x, y } = uploadPoints(dataset, indices);
            const hostX = new Float32Array(n * pointSize);
            for (let k = 0; k < n; k++) {
              const bytes = dataset.images.subarray(indices[k] * pointSize, (indices[k] + 1) * pointSize);
              for (let e = 0; e < pointSize; e++) hostX[k * pointSize + e] = bytes[e] / 255;
            }
            try {
              // Clean: R draws.
              const t0 = performance.now();
              manualSeed(mixSeed(seed, batch.batch, PHASE_CLEAN));
              const cleanT = predictDraws(options.model, x, draws);
              const cleanPreds = await cleanT.toArray();
              cleanT.dispose();
              run.cleanSeconds += (performance.now() - t0) / 1000;
              const clean = outcomes(cleanPreds, labels, draws);
              done++;

              const perAttack: (Outcome | null)[][] = attacks.map(() => new Array(n).fill(null));
              const perAttackPreds: (number[] | null)[][] = attacks.map(() => new Array(n).fill(null));
              const advHost: (Float32Array | null)[] = attacks.map(() => null);
              // Points still robust (sequential suites attack only those). On a random model a
              // point leaves only when no draw classified it right: one whose vote failed on these
              // draws may pass on the fresh draws of the worst case, so it must face every attack.
              const stillRobust = (o: Outcome) => random ? o.correct > 0 : o.vote;
              let active = positions.map((_, k) => k).filter((k) => !sequential || stillRobust(clean[k]));

              for (const [j, a] of attacks.entries()) {
                const prior = reuse[j];
                if (prior) {
                  // Copy from the earlier setting of this protocol (same seed, same points).
                  const priorRun = prior.runs[seedIndex];
                  const byPosition = new Map(priorRun.points.map((p) => [p.position, p]));
                  positions.forEach((p, k) => {
                    const rec = byPosition.get(p);
                    perAttack[j][k] = rec?.attacks[j] ?? null;
                    perAttackPreds[j][k] = rec?.predictions?.attacks[j] ?? null;
                  });
                  if (batch === plan[0]) run.attackStats[j] = { ...priorRun.attackStats[j] };
                  done++;
                  continue;
                }
                if (active.length === 0) {
                  done++;
                  continue;
                }
                const sub = active.length === n ? { x, y, own: false } : {
                  ...uploadPoints(dataset, active.map((k) => indices[k])),
                  own: true,
                };
                const labelsSub = active.map((k) => labels[k]);
                const xSub = active.length === n ? hostX : gatherRows(hostX, active, pointSize);
                try {
                  const attackSeed = mixSeed(seed, batch.batch, j);
                  seedAttackedModel(attackSeed);
                  const t1 = performance.now();
                  const xAdv = tidy(() =>
                    a.fn(attacked, sub.x, sub.y, threat, { ...optionsOf(a), seed: attackSeed })
                  );
                  let advArray: Float32Array;
                  try {
                    checkAdversarialShape(a.entry.label, xAdv, sub.x);
                    advArray = await xAdv.toArray() as Float32Array;
                    run.attackStats[j].seconds += (performance.now() - t1) / 1000;
                    manualSeed(mixSeed(seed, batch.batch, j, PHASE_EVAL));
                    const predsT = predictDraws(options.model, xAdv, draws);
                    const preds = await predsT.toArray();
                    predsT.dispose();
                    const outs = outcomes(preds, labelsSub, draws);
                    active.forEach((k, s) => {
                      perAttack[j][k] = outs[s];
                      if (options.recordPredictions) {
                        perAttackPreds[j][k] = column(preds, active.length, draws, s);
                      }
                    });
                    const stats = boundStats(advArray, xSub, active.length, threat, a.bound);
                    const st = run.attackStats[j];
                    st.points += active.length;
                    st.maxNormRatio = Math.max(st.maxNormRatio, stats.maxNormRatio);
                    st.minValue = Math.min(st.minValue, stats.minValue);
                    st.maxValue = Math.max(st.maxValue, stats.maxValue);
                    st.nonFinite += stats.nonFinite;
                  } finally {
                    xAdv.dispose();
                  }
                  // Host copy at full batch size (NaN rows for points not attacked).
                  const full = new Float32Array(n * pointSize).fill(NaN);
                  active.forEach((k, s) =>
                    full.set(advArray.subarray(s * pointSize, (s + 1) * pointSize), k * pointSize)
                  );
                  advHost[j] = full;
                } finally {
                  if (sub.own) {
                    sub.x.dispose();
                    sub.y.dispose();
                  }
                }
                if (sequential && a.bound === "norm") {
                  active = active.filter((k) => stillRobust(perAttack[j][k]!));
                }
                done++;
                const accNow = perAttack[j].filter((o) => o?.vote).length / n;
                options.onProgress?.(done, units, {
                  setting: `${protocol} ${threatLabel(threat)}`,
                  attack: a.entry.label,
                  acc: accNow,
                });
              }

              // Worst case per point over clean + norm-bounded attacks. An attack's output that
              // ties with the clean image is taken: it was pushed up the loss, so on the fresh
              // draws below it is the likelier of the two to fail.
              const worstFrom = positions.map((_, k) => {
                let best = -1, bestOutcome = clean[k];
                attacks.forEach((a, j) => {
                  const o = perAttack[j][k];
                  if (a.bound !== "norm" || !o) return;
                  if (best < 0 ? !worseForDefence(clean[k], o) : worseForDefence(o, bestOutcome)) {
                    [best, bestOutcome] = [j, o];
                  }
                });
                return best;
              });
              let worst: Outcome[] = worstFrom.map((from, k) => from < 0 ? clean[k] : perAttack[from][k]!);
              let worstPreds: number[][] | null = options.recordPredictions
                ? worstFrom.map((from, k) =>
                  from < 0 ? column(cleanPreds, n, draws, k) : perAttackPreds[from][k]!
                )
                : null;
              if (random) {
                // Re-evaluate the chosen candidates with fresh draws (selection among noisy
                // outcomes would otherwise bias the worst case down).
                const cand = new Float32Array(n * pointSize);
                worstFrom.forEach((from, k) => {
                  const src = from < 0 ? hostX : advHost[from]!;
                  cand.set(src.subarray(k * pointSize, (k + 1) * pointSize), k * pointSize);
                });
                const candT = fromArray(cand, [n, channels, height, width]);
                manualSeed(mixSeed(seed, batch.batch, PHASE_WORST));
                const predsT = predictDraws(options.model, candT, draws);
                const preds = await predsT.toArray();
                predsT.dispose();
                candT.dispose();
                worst = outcomes(preds, labels, draws);
                if (worstPreds) worstPreds = positions.map((_, k) => column(preds, n, draws, k));
              }

              positions.forEach((position, k) => {
                const rec: PointRecord = {
                  position,
                  index: indices[k],
                  label: labels[k],
                  clean: clean[k],
                  attacks: attacks.map((_, j) => perAttack[j][k]),
                  worst: worst[k],
                  worstFrom: worstFrom[k],
                };
                if (options.recordPredictions) {
                  rec.predictions = {
                    clean: column(cleanPreds, n, draws, k),
                    attacks: attacks.map((_, j) => perAttackPreds[j][k]),
                    worst: worstPreds![k],
                  };
                }
                run.points.push(rec);
              });

              // Examples for reports: first seed, first points of this run.
              if (exampleSet && seedIndex === 0 && exampleSet.positions.length < keepExamples) {
                const take = Math.min(n, keepExamples - exampleSet.positions.length);
                exampleSet.positions.push(...positions.slice(0, take));
                exampleSet.labels.push(...labels.slice(0, take));
                exampleSet.clean = appendRows(exampleSet.clean, hostX.subarray(0, take * pointSize));
                attacks.forEach((a, j) => {
                  const label = a.entry.label;
                  const rows = advHost[j]?.subarray(0, take * pointSize) ??
                    new Float32Array(take * pointSize).fill(NaN);
                  exampleSet.adversarial[label] = appendRows(exampleSet.adversarial[label], rows);
                  exampleSet.predictions[label] = [
                    ...(exampleSet.predictions[label] ?? []),
                    ...Array.from({ length: take }, (_, k) => perAttackPreds[j][k]?.[0] ?? -1),
                  ];
                });
              }
            } finally {
              x.dispose();
              y.dispose();
            }
          }
          setting.runs.push(run);
        }
        settings.push(setting);
        if (exampleSet && exampleSet.positions.length > 0) {
          // Threat-independent attacks ran in an earlier setting: take their examples from there.
          const earlier = examples.find((e) => e.protocol === protocol);
          attacks.forEach((a, j) => {
            if (reuse[j] && earlier) {
              exampleSet.adversarial[a.entry.label] = earlier.adversarial[a.entry.label];
              exampleSet.predictions[a.entry.label] = earlier.predictions[a.entry.label];
            }
          });
          examples.push(exampleSet);
        }
      }
    }

    const result: EvalResult = {
      format: "atop-robust-eval/1",
      config: {
        model: options.modelName ?? "model",
        ...(options.modelKey ? { modelKey: options.modelKey } : {}),
        dataset: options.datasetName ?? dataset.name,
        points: total,
        limit: options.limit ?? null,
        batchSize,
        draws,
        random,
        seeds,
        sequential,
        shard: options.shard ?? null,
      },
      randomness,
      settings,
      summary: [],
      seconds: (performance.now() - started) / 1000,
      sanity: [],
    };
    result.summary = summarize(result);
    result.sanity = resultChecks(result);
    for (const check of result.sanity) {
      if (check.passed === false) warn(`sanity: ${check.name}: ${check.detail}`);
    }
    return { result, examples };
  } finally {
    defaultGenerator.seed = saved.seed;
    defaultGenerator.stream = saved.stream;
  }
}

/** Per-example predictions used the first draw; records keep all (see recordPredictions). */
function appendRows(a: Float32Array | undefined, b: Float32Array): Float32Array {
  const out = new Float32Array((a?.length ?? 0) + b.length);
  if (a) out.set(a);
  out.set(b, a?.length ?? 0);
  return out;
}

function gatherRows(src: Float32Array, rows: number[], size: number): Float32Array {
  const out = new Float32Array(rows.length * size);
  rows.forEach((r, k) => out.set(src.subarray(r * size, (r + 1) * size), k * size));
  return out;
}

function checkAdversarialShape(label: string, xAdv: Tensor, x: Tensor): void {
  if (
    xAdv.dtype !== "f32" || xAdv.shape.length !== x.shape.length ||
    xAdv.shape.some((d, i) => d !== x.shape[i])
  ) {
    throw new Error(`evaluate: attack '${label}' returned ${xAdv.describe()} for input ${x.describe()}`);
  }
}

/** Options as JSON (functions, e.g. a BPDA surrogate, become their names). */
function jsonOptions(options: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(options)) {
    if (k === "seed") continue;
    out[k] = typeof v === "function" ? `<function ${v.name || "anonymous"}>` : v;
  }
  return out;
}
