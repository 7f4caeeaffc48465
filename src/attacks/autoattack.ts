/**
 * AutoAttack-style ensembles (Croce & Hein 2020): several complementary attacks run in
 * sequence, each on the points the previous ones did not fool, each from the clean image; a
 * point counts as robust only if it survives all of them (the per-point worst case).
 *
 *   "standard": APGD-CE, APGD-T (9 target classes), Square (5,000 queries)
 *               (AutoAttack also runs FAB-T between APGD-T and Square; FAB is not implemented
 *               here. On standard models FAB-T rarely changes the result after APGD-T.)
 *   "rand":     APGD-CE and APGD-DLR with EOT 20, 1 restart, 100 iterations each (for
 *               randomised defences; about 4,040 gradients per point).
 *
 * This is an evaluation, not a training step, so unlike the attacks themselves it reads back:
 * after each attack one forward pass on its output decides, on the host, which points are still
 * robust, and the next attack runs only on those (gathered into a smaller batch). That readback
 * is what makes the expensive later attacks (APGD-T runs APGD nine times) cheap. Like
 * AutoAttack, robustness is judged on one forward pass (one draw of a random model's
 * randomness); re-evaluate the returned x_adv with several draws for the protocol of random
 * defences (ATTACKS.md).
 *
 * The returned x_adv holds, per point, the candidate with the lowest margin z_y − max_{i≠y} z_i
 * over the attacks that ran on it: a fooling example where one was found, else the attack output
 * that came closest (the clean image for points the model misclassifies to begin with).
 */
import { noGrad } from "../autograd/tape.ts";
import { fromArray } from "../ops/creation.ts";
import { correctPredictions } from "../ops/metrics.ts";
import { tidy } from "../tensor/scope.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { apgd, apgdT } from "./apgd.ts";
import { marginLoss } from "./losses.ts";
import { square } from "./square.ts";
import type { GradientOptions, Model, ThreatModel } from "./types.ts";

export type AutoAttackVersion = "standard" | "rand";

export interface AutoAttackOptions extends GradientOptions {
  /** "standard" (default) or "rand" (random defences). */
  version?: AutoAttackVersion;
  /** Progress lines: true for console.log, or a function receiving each line. */
  log?: boolean | ((line: string) => void);
  /** Iterations of each APGD run (default 100; lower it only for quick checks). */
  steps?: number;
  /** Target classes of APGD-T (default 9, at most K − 1). */
  targets?: number;
  /** Queries of Square (default 5000). */
  squareQueries?: number;
}

export interface AutoAttackResult {
  /** Per point, the worst-case candidate (see the module comment); owned by the caller. */
  xAdv: Tensor;
  /** 1 where the point survived every attack (and was classified correctly to begin with). */
  robust: Uint8Array;
  /** Robust points after the clean check and after each attack, in order. */
  perAttack: { name: string; robustAfter: number }[];
}

/** One member of the ensemble: runs on a batch of still-robust points. */
interface Member {
  name: string;
  run: (model: Model, x: Tensor, y: Tensor) => Tensor;
}

function members(threat: ThreatModel, options: AutoAttackOptions): Member[] {
  const version = options.version ?? "standard";
  const steps = options.steps ?? 100;
  const seed = options.seed;
  // Different seeds per member, so no two attacks share their random starts.
  const seedOf = (k: number) => seed === undefined ? undefined : seed + k;
  const gradient: GradientOptions = {
    eot: options.eot,
    averageLogits: options.averageLogits,
    surrogate: options.surrogate,
  };
  if (version === "rand") {
    const eot = options.eot ?? 20;
    return (["ce", "dlr"] as const).map((loss, k) => ({
      name: `apgd-${loss}`,
      run: (model, x, y) =>
        apgd(model, x, y, threat, { ...gradient, eot, loss, steps, restarts: 1, seed: seedOf(k) }),
    }));
  }
  if (version !== "standard") {
    throw new ShapeError(
      "autoAttack",
      `version must be "standard" or "rand", got ${JSON.stringify(version)}`,
    );
  }
  return [
    {
      name: "apgd-ce",
      run: (model, x, y) =>
        apgd(model, x, y, threat, { ...gradient, loss: "ce", steps, restarts: 1, seed: seedOf(0) }),
    },
    {
      name: "apgd-t",
      run: (model, x, y) =>
        apgdT(model, x, y, threat, {
          ...gradient,
          steps,
          restarts: 1,
          targets: options.targets,
          seed: seedOf(1),
        }),
    },
    {
      name: "square",
      run: (model, x, y) =>
        square(model, x, y, threat, {
          queries: options.squareQueries ?? 5000,
          eot: options.eot,
          seed: seedOf(2),
        }),
    },
  ];
}

/** Correct-prediction flags and margins of one forward pass, read back. */
async function judge(
  model: Model,
  x: Tensor,
  y: Tensor,
): Promise<{ correct: Float32Array; margin: Float32Array }> {
  const { correct, margin } = tidy(() =>
    noGrad(() => {
      const logits = model(x);
      return { correct: correctPredictions(logits, y), margin: marginLoss(logits, y) };
    })
  );
  const [c, m] = await Promise.all([correct.toArray(), margin.toArray()]);
  correct.dispose();
  margin.dispose();
  return { correct: c as Float32Array, margin: m as Float32Array };
}

/**
 * Runs the ensemble of `options.version` on (x, y) under `threat`; see the module comment.
 * Asynchronous: it reads back between attacks (an evaluation, not a training step).
 */
export async function autoAttack(
  model: Model,
  x: Tensor,
  y: Tensor,
  threat: ThreatModel,
  options: AutoAttackOptions = {},
): Promise<AutoAttackResult> {
  const op = "autoAttack";
  if (x.dtype !== "f32" || x.rank < 2 || x.shape[0] === 0) {
    throw new ShapeError(op, `x must be a non-empty f32 batch [N, ...], got ${x.describe()}`);
  }
  if (y.dtype !== "i32" || y.rank !== 1 || y.shape[0] !== x.shape[0]) {
    throw new ShapeError(op, `y must be i32 [${x.shape[0]}] to match x ${fmt(x.shape)}, got ${y.describe()}`);
  }
  const log = options.log === true ? console.log : options.log || (() => {});
  const attacks = members(threat, options);
  const n = x.shape[0], d = x.size / n;
  const [xHost, yHost] = await Promise.all([x.toArray(), y.toArray()]);
  const xAdvHost = Float32Array.from(xHost);

  const clean = await judge(model, x, y);
  const robust = Uint8Array.from(clean.correct, (c) => c > 0 ? 1 : 0);
  const bestMargin = Float32Array.from(clean.margin);
  const count = () => robust.reduce((s, r) => s + r, 0);
  const perAttack = [{ name: "clean", robustAfter: count() }];
  log(`autoAttack ${options.version ?? "standard"} ${threat.norm} eps ${threat.eps}: clean ${count()}/${n}`);

  for (const attack of attacks) {
    const points: number[] = [];
    robust.forEach((r, i) => r && points.push(i));
    if (points.length === 0) {
      perAttack.push({ name: attack.name, robustAfter: 0 });
      continue;
    }
    const started = performance.now();
    // Gather the still-robust points into one batch (host copies: this is an evaluation).
    const xSub = new Float32Array(points.length * d);
    points.forEach((i, j) => xSub.set(xHost.subarray(i * d, (i + 1) * d), j * d));
    const xs = fromArray(xSub, [points.length, ...x.shape.slice(1)]);
    const ys = fromArray(Int32Array.from(points, (i) => yHost[i]), [points.length], "i32");
    const xa = attack.run(model, xs, ys);
    const [verdict, xaHost] = await Promise.all([judge(model, xa, ys), xa.toArray()]);
    points.forEach((i, j) => {
      const fooled = verdict.correct[j] === 0;
      if (fooled || verdict.margin[j] < bestMargin[i]) {
        xAdvHost.set(xaHost.subarray(j * d, (j + 1) * d), i * d);
        bestMargin[i] = verdict.margin[j];
      }
      if (fooled) robust[i] = 0;
    });
    [xs, ys, xa].forEach((t) => t.dispose());
    perAttack.push({ name: attack.name, robustAfter: count() });
    log(`  ${attack.name}: robust ${count()}/${n} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  }
  return { xAdv: fromArray(xAdvHost, x.shape), robust, perAttack };
}
