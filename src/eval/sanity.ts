/**
 * Sanity checks of a robust evaluation: the gradient-masking detectors of ATTACKS.md. A failed
 * check does not stop anything; it is printed as a warning and recorded as a verdict (JSON), so
 * a table is never reported without them.
 *
 * Two kinds:
 * - `resultChecks(result)`: from an evaluation's records, at no extra cost — norms ≤ eps,
 *   x_adv ∈ [0,1], no NaN; iterative attacks beat FGSM; white-box beats Square.
 * - `runSanityChecks(...)`: small experiments on one batch — the eps sweep falls to ~0, iterative
 *   beats single-step, white-box beats Square, more steps / EOT never help the defence beyond
 *   noise, random search in the ball finds nothing PGD missed, and with the randomness frozen
 *   PGD drives accuracy far down.
 *
 * "Beyond noise": two accuracies on the same n points differ by noise of about
 * sqrt((pa(1-pa) + pb(1-pb)) / n); we allow twice that plus one point.
 */
import { resolveAttack } from "../attacks/registry.ts";
import type { AttackFn, Model, ThreatModel } from "../attacks/types.ts";
import { fromArray } from "../ops/creation.ts";
import { defaultGenerator, manualSeed } from "../ops/random.ts";
import { tidy } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";
import {
  EOT_ON_RANDOM,
  type EvalResult,
  mixSeed,
  outcomes,
  predictDraws,
  seedAttackedModel,
} from "./protocol.ts";
import { findRow, threatLabel } from "./report.ts";

export interface SanityCheck {
  name: string;
  /** null: skipped (not applicable or not enough data). */
  passed: boolean | null;
  detail: string;
  values?: Record<string, number | number[]>;
}

export interface SanityReport {
  /** No check failed (skipped ones do not count). */
  passed: boolean;
  points: number;
  cleanAccuracy: number;
  checks: SanityCheck[];
}

/** Tolerance for "a is not above b beyond noise" on n points. */
export function noiseTolerance(a: number, b: number, n: number): number {
  return 2 * Math.sqrt((a * (1 - a) + b * (1 - b)) / Math.max(n, 1)) + 1 / Math.max(n, 1);
}

/**
 * Paired comparison of two rows evaluated on the same points: per point the difference of the
 * fractions correct, its mean, and the noise tolerance 2·sd/√n (+ 1/n for the discreteness of
 * a count). Points skipped in either row (null) are left out. Much tighter than
 * `noiseTolerance` when the two rows fail on mostly the same points, as defences that share a
 * classifier do.
 */
export function pairedDifference(
  a: readonly (number | null)[],
  b: readonly (number | null)[],
): { diff: number; tolerance: number; n: number } {
  const d: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const [x, y] = [a[i], b[i]];
    if (x !== null && y !== null) d.push(x - y);
  }
  const n = d.length;
  if (n === 0) return { diff: NaN, tolerance: NaN, n };
  const mean = d.reduce((s, v) => s + v, 0) / n;
  const variance = n > 1 ? d.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1) : 0;
  return { diff: mean, tolerance: 2 * Math.sqrt(variance / n) + 1 / n, n };
}

const pct = (v: number) => `${(100 * v).toFixed(1)} %`;

// ---------------------------------------------------------------------------------------------
// From an evaluation result

const SINGLE_STEP = new Set(["fgsm"]);
const ITERATIVE = new Set(["pgd", "eot-pgd", "apgd-ce", "apgd-dlr", "apgd-t"]);
const BLACK_BOX = new Set(["square"]);

/** Norm/box/NaN checks per attack and the attack-ordering checks, from an evaluation's records. */
export function resultChecks(result: EvalResult, normSlack = 1e-4): SanityCheck[] {
  const checks: SanityCheck[] = [];
  const seq = result.config.sequential;
  for (const s of result.settings) {
    const where = `${s.protocol} ${threatLabel(s.threat)}`;
    s.attacks.forEach((a, j) => {
      const stats = s.runs.map((r) => r.attackStats[j]);
      const points = stats.reduce((n, st) => n + st.points, 0);
      if (points === 0) return;
      const ratio = Math.max(...stats.map((st) => st.maxNormRatio));
      const lo = Math.min(...stats.map((st) => st.minValue)),
        hi = Math.max(...stats.map((st) => st.maxValue));
      const bad = stats.reduce((n, st) => n + st.nonFinite, 0);
      const normOk = a.bound !== "norm" || ratio <= 1 + normSlack;
      const boxOk = lo >= 0 && hi <= 1;
      checks.push({
        name: `bounds ${where} ${a.label}`,
        passed: normOk && boxOk && bad === 0,
        detail: `${a.bound === "norm" ? `max ‖δ‖/eps ${ratio.toFixed(5)}, ` : ""}x_adv in [${lo}, ${hi}], ` +
          `${bad} non-finite values (${points} points)`,
        values: { maxNormRatio: ratio, minValue: lo, maxValue: hi, nonFinite: bad },
      });
    });
    if (seq) continue; // sequential rows are cumulative: orderings hold by construction
    const acc = (label: string) => findRow(result, s, label);
    const n = result.settings[0].runs[0]?.points.length ?? 0;
    const byKind = (kinds: Set<string>) => s.attacks.filter((a) => kinds.has(a.attack)).map((a) => a.label);
    const compare = (name: string, strong: string[], weak: string[], what: string) => {
      if (strong.length === 0 || weak.length === 0) return;
      const best = strong.map((l) => ({ l, r: acc(l) })).filter((e) => e.r)
        .reduce((a, b) => (b.r!.majority.mean < a.r!.majority.mean ? b : a));
      const ref = weak.map((l) => ({ l, r: acc(l) })).filter((e) => e.r)
        .reduce((a, b) => (b.r!.majority.mean < a.r!.majority.mean ? b : a));
      const pa = best.r!.majority.mean, pb = ref.r!.majority.mean;
      const tol = noiseTolerance(pa, pb, n);
      checks.push({
        name: `${name} (${where})`,
        passed: pa <= pb + tol,
        detail: `${best.l} ${pct(pa)} vs ${ref.l} ${pct(pb)} (tolerance ${pct(tol)})${
          pa <= pb + tol ? "" : `: ${what}`
        }`,
        values: { strong: pa, weak: pb, tolerance: tol },
      });
    };
    compare(
      "iterative beats single-step",
      byKind(ITERATIVE),
      byKind(SINGLE_STEP),
      "the iterative attack is weaker than FGSM: broken step size, loss or gradient masking",
    );
    compare(
      "white-box beats Square",
      byKind(ITERATIVE),
      byKind(BLACK_BOX),
      "a black-box attack beats the gradient attacks: gradient masking / obfuscated gradients",
    );
  }
  return checks;
}

// ---------------------------------------------------------------------------------------------
// Experiments

export interface SanityOptions {
  /** The iterative white-box attack (default: registry "pgd", 20 steps). Receives steps/eot. */
  iterative?: AttackFn;
  iterativeOptions?: Record<string, unknown>;
  /** Default: registry "fgsm". */
  singleStep?: AttackFn;
  /** Default: registry "square" with `blackBoxQueries` queries; null skips the check. */
  blackBox?: AttackFn | null;
  blackBoxQueries?: number;
  /** Budgets of the eps sweep (default: 0, eps/4, eps, 4·eps and the whole box). */
  epsGrid?: number[];
  /** Accuracy the sweep must reach at its largest eps (default 0.1). */
  sweepFloor?: number;
  /** Steps of the "more steps" check: [few, many] (default [10, 40]). */
  steps?: [number, number];
  /** EOT draws of the "more EOT" check, random models only: [few, many] (default [1, 8]). */
  eot?: [number, number];
  /** Random points of the ball tried per point (default 10); 0 skips the random-search check. */
  randomSearch?: number;
  /** The defence with its randomness frozen (fixed seeds): PGD must break it. */
  frozenModel?: Model;
  /** Frozen check passes when attacked accuracy ≤ this fraction of its clean accuracy (0.5). */
  frozenFraction?: number;
  /** Draws per evaluation (default 1, or 5 for random models). */
  draws?: number;
  random?: boolean;
  seed?: number;
  warn?: (message: string) => void;
}

function largestEps(threat: ThreatModel, x: Tensor): number {
  const d = x.shape.slice(1).reduce((a, b) => a * b, 1);
  return threat.norm === "linf" ? 1 : Math.sqrt(d);
}

/**
 * Runs the experiments on one batch (x, y) and returns the verdicts; warns for each failure.
 * Cost: about (grid + 5) iterative attacks, one FGSM and one Square run on the batch.
 */
export async function runSanityChecks(
  model: Model,
  x: Tensor,
  y: Tensor,
  threat: ThreatModel,
  options: SanityOptions = {},
): Promise<SanityReport> {
  const warn = options.warn ?? ((m: string) => console.warn(`warning: sanity: ${m}`));
  const saved = { seed: defaultGenerator.seed, stream: defaultGenerator.stream };
  const seed = options.seed ?? 0;
  const random = options.random ?? false;
  const draws = options.draws ?? (random ? 5 : 1);
  const n = x.shape[0];
  const labels = Array.from(await y.toArray());
  const iterative = options.iterative ?? resolveAttack("pgd", { steps: 20 }).fn;
  // On a random model every attack takes EOT draws unless told otherwise (see EOT_ON_RANDOM):
  // a one-draw PGD would lose to Square's 20-draw search and trip "white-box beats Square".
  const eotOnRandom = random ? { eot: EOT_ON_RANDOM } : {};
  const iterOpts = options.iterative ? { ...options.iterativeOptions } : {
    ...resolveAttack("pgd", { steps: 20 }).options,
    ...eotOnRandom,
    ...options.iterativeOptions,
  };
  const singleStep = options.singleStep ?? resolveAttack("fgsm").fn;
  const square = resolveAttack("square", { queries: options.blackBoxQueries ?? 1000 });
  const blackBox = options.blackBox === null ? null : options.blackBox ?? square.fn;
  const blackOpts = options.blackBox ? {} : { ...square.options, ...eotOnRandom };
  const checks: SanityCheck[] = [];
  let phase = 0;

  /** Single-draw accuracy of `model` on `xs` (fresh draws, reproducible). */
  const accuracy = async (m: Model, xs: Tensor): Promise<{ acc: number; correct: number[] }> => {
    manualSeed(mixSeed(seed, 7000, phase++));
    const t = predictDraws(m, xs, draws);
    const preds = await t.toArray();
    t.dispose();
    const outs = outcomes(preds, labels, draws);
    return {
      acc: outs.reduce((s, o) => s + o.correct, 0) / (draws * n),
      correct: outs.map((o) => o.correct),
    };
  };
  const attackAcc = async (
    fn: AttackFn,
    t: ThreatModel,
    opts: Record<string, unknown>,
    m: Model = model,
  ): Promise<{ acc: number; correct: number[] }> => {
    const s = mixSeed(seed, 8000, phase++);
    seedAttackedModel(s);
    const xAdv = tidy(() => fn(m, x, y, t, { ...opts, seed: s }));
    try {
      return await accuracy(m, xAdv);
    } finally {
      xAdv.dispose();
    }
  };
  const verdict = (check: SanityCheck) => {
    checks.push(check);
    if (check.passed === false) warn(`${check.name}: ${check.detail}`);
  };
  const notAbove = (name: string, a: number, b: number, what: string, labelA: string, labelB: string) => {
    const tol = noiseTolerance(a, b, n);
    verdict({
      name,
      passed: a <= b + tol,
      detail: `${labelA} ${pct(a)} vs ${labelB} ${pct(b)} (tolerance ${pct(tol)})${
        a <= b + tol ? "" : `: ${what}`
      }`,
      values: { [labelA]: a, [labelB]: b, tolerance: tol },
    });
  };

  try {
    const clean = await accuracy(model, x);

    // 1. eps sweep: monotone (within noise) and ~0 at the largest budget.
    const big = largestEps(threat, x);
    const grid = options.epsGrid ?? [0, threat.eps / 4, threat.eps, 4 * threat.eps, big]
      .filter((e, i, a) => e <= big && a.indexOf(e) === i);
    const sweep: number[] = [];
    for (const eps of grid) sweep.push((await attackAcc(iterative, { ...threat, eps }, iterOpts)).acc);
    const floor = options.sweepFloor ?? 0.1;
    let monotone = true;
    for (let i = 1; i < sweep.length; i++) {
      if (sweep[i] > sweep[i - 1] + noiseTolerance(sweep[i], sweep[i - 1], n)) monotone = false;
    }
    const last = sweep[sweep.length - 1];
    verdict({
      name: "eps sweep falls to ~0",
      passed: monotone && last <= floor,
      detail: `accuracy ${sweep.map(pct).join(" → ")} at eps ${
        grid.map((e) => Number(e.toPrecision(3))).join(", ")
      }` +
        (last > floor
          ? `: still ${pct(last)} > ${pct(floor)} at the largest budget (gradient masking or a broken attack)`
          : "") +
        (!monotone ? ": not monotone" : ""),
      values: { eps: grid, accuracy: sweep },
    });

    // 2. Iterative beats single-step.
    const iter = await attackAcc(iterative, threat, iterOpts);
    const single = await attackAcc(singleStep, threat, {});
    notAbove(
      "iterative beats single-step",
      iter.acc,
      single.acc,
      "the iterative attack is weaker than FGSM",
      "iterative",
      "FGSM",
    );

    // 3. White-box beats Square.
    if (blackBox) {
      const bb = await attackAcc(blackBox, threat, blackOpts);
      notAbove(
        "white-box beats Square",
        iter.acc,
        bb.acc,
        "gradient masking suspected",
        "white-box",
        "Square",
      );
    } else verdict({ name: "white-box beats Square", passed: null, detail: "skipped (no black-box attack)" });

    // 4. More steps never help the defence beyond noise.
    const [few, many] = options.steps ?? [10, 40];
    const fewAcc = (await attackAcc(iterative, threat, { ...iterOpts, steps: few })).acc;
    const manyAcc = (await attackAcc(iterative, threat, { ...iterOpts, steps: many })).acc;
    notAbove(
      "more steps never help the defence",
      manyAcc,
      fewAcc,
      "more iterations raised robust accuracy",
      `${many} steps`,
      `${few} steps`,
    );

    // 5. More EOT draws never help the defence (random models).
    if (random) {
      const [e1, e2] = options.eot ?? [1, 8];
      const a1 = (await attackAcc(iterative, threat, { ...iterOpts, eot: e1 })).acc;
      const a2 = (await attackAcc(iterative, threat, { ...iterOpts, eot: e2 })).acc;
      notAbove(
        "more EOT never helps the defence",
        a2,
        a1,
        "more EOT samples raised robust accuracy",
        `EOT ${e2}`,
        `EOT ${e1}`,
      );
    } else {verdict({
        name: "more EOT never helps the defence",
        passed: null,
        detail: "skipped (deterministic model)",
      });}

    // 6. Random search in the ball finds nothing the gradient attack missed.
    const tries = options.randomSearch ?? 10;
    if (tries > 0) {
      const foundByNoise = new Array(n).fill(false);
      const shape = x.shape;
      const d = x.size / n;
      const host = await x.toArray() as Float32Array;
      let state = mixSeed(seed, 9000) || 1;
      const uniform = () => {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        return (state >>> 0) / 2 ** 32;
      };
      for (let t = 0; t < tries; t++) {
        const cand = new Float32Array(host.length);
        for (let i = 0; i < n; i++) {
          // linf: a random vertex of the cube; l2: a random direction of norm eps.
          let scale = threat.eps;
          if (threat.norm === "l2") {
            let s2 = 0;
            const g = new Float64Array(d);
            for (let e = 0; e < d; e++) {
              const u1 = Math.max(uniform(), 1e-12), u2 = uniform();
              g[e] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
              s2 += g[e] * g[e];
            }
            scale = threat.eps / Math.sqrt(s2);
            for (let e = 0; e < d; e++) {
              cand[i * d + e] = Math.min(1, Math.max(0, host[i * d + e] + scale * g[e]));
            }
          } else {
            for (let e = 0; e < d; e++) {
              const v = host[i * d + e] + (uniform() < 0.5 ? -scale : scale);
              cand[i * d + e] = Math.min(1, Math.max(0, v));
            }
          }
        }
        const candT = fromArray(cand, [...shape]);
        const r = await accuracy(model, candT);
        candT.dispose();
        r.correct.forEach((c, i) => {
          if (c < draws / 2) foundByNoise[i] = true;
        });
      }
      const missed = foundByNoise.filter((f, i) => f && iter.correct[i] >= draws / 2).length;
      const allowed = Math.max(1, Math.ceil(0.02 * n));
      verdict({
        name: "random search finds nothing PGD missed",
        passed: missed <= allowed,
        detail:
          `${missed} of ${n} points broken by random points of the ball but not by the iterative attack` +
          (missed > allowed ? " (gradient masking or a broken attack)" : ""),
        values: { missed, tries },
      });
    }

    // 7. Frozen randomness: the deterministic version must fall.
    if (options.frozenModel) {
      const cleanFrozen = (await accuracy(options.frozenModel, x)).acc;
      const attacked = (await attackAcc(iterative, threat, iterOpts, options.frozenModel)).acc;
      const fraction = options.frozenFraction ?? 0.5;
      verdict({
        name: "frozen randomness: PGD drives accuracy down",
        passed: attacked <= fraction * cleanFrozen,
        detail: `frozen model ${pct(cleanFrozen)} clean → ${pct(attacked)} under attack` +
          (attacked > fraction * cleanFrozen ? " (gradient plumbing through the defence is broken)" : ""),
        values: { clean: cleanFrozen, attacked },
      });
    } else {
      verdict({
        name: "frozen randomness: PGD drives accuracy down",
        passed: null,
        detail: "skipped (no frozen model)",
      });
    }

    return { passed: checks.every((c) => c.passed !== false), points: n, cleanAccuracy: clean.acc, checks };
  } finally {
    defaultGenerator.seed = saved.seed;
    defaultGenerator.stream = saved.stream;
  }
}
