/**
 * Attacks and suites by name, with the defaults of ATTACKS.md, so configs and the CLI can say
 * `--attack apgd-ce` or `--suite aa-rand`.
 *
 * Every entry is an `AttackFn` (types.ts): `(model, x, y, threat, options) => x_adv`. Options
 * given by the caller override the registered defaults; `seed` is the attack's own randomness.
 */
import { apgd, apgdT } from "./apgd.ts";
import { fgsm } from "./fgsm.ts";
import { pgd } from "./pgd.ts";
import { square } from "./square.ts";
import { stAdv, type StAdvOptions } from "./stadv.ts";
import type { AttackFn, ThreatModel } from "./types.ts";

export interface AttackInfo {
  describe: string;
  fn: AttackFn;
  /** Registered defaults (ATTACKS.md). */
  defaults: Record<string, unknown>;
  /** "norm": x_adv in the threat's ball; "spatial": bounded by its own flow budget (StAdv). */
  bound: "norm" | "spatial";
  /** "white-box" (gradients), "black-box" (scores only), for the sanity checks. */
  access: "white-box" | "black-box";
  /** Option that sets its iteration count (for --steps). */
  stepsOption?: string;
}

// The attack functions take their own typed options; the registry passes a plain record.
const as = (f: unknown) => f as AttackFn;

export const ATTACKS: Record<string, AttackInfo> = {
  fgsm: {
    describe: "FGSM: one step of eps along sign(g) (linf) or g/‖g‖ (l2)",
    fn: as(fgsm),
    defaults: {},
    bound: "norm",
    access: "white-box",
  },
  pgd: {
    describe: "PGD with random start and keep-best; 10 steps of max(eps/4, 2.5·eps/steps)",
    fn: as(pgd),
    defaults: { steps: 10 },
    bound: "norm",
    access: "white-box",
    stepsOption: "steps",
  },
  "eot-pgd": {
    describe: "PGD for purifiers (Lee & Kim 2023): 200 steps of 0.007, EOT 20, no random start",
    fn: as(pgd),
    defaults: { steps: 200, stepSize: 0.007, eot: 20, randomStart: false },
    bound: "norm",
    access: "white-box",
    stepsOption: "steps",
  },
  "apgd-ce": {
    describe: "APGD with the cross-entropy loss, 100 iterations, 1 restart",
    fn: as(apgd),
    defaults: { loss: "ce", steps: 100, restarts: 1 },
    bound: "norm",
    access: "white-box",
    stepsOption: "steps",
  },
  "apgd-dlr": {
    describe: "APGD with the DLR loss (scale-invariant), 100 iterations, 1 restart",
    fn: as(apgd),
    defaults: { loss: "dlr", steps: 100, restarts: 1 },
    bound: "norm",
    access: "white-box",
    stepsOption: "steps",
  },
  "apgd-t": {
    describe: "APGD with the targeted DLR loss over the 9 most likely other classes, 100 iterations each",
    fn: as(apgdT),
    defaults: { steps: 100, restarts: 1 },
    bound: "norm",
    access: "white-box",
    stepsOption: "steps",
  },
  square: {
    describe: "Square attack (score-based black box, margin loss), 5000 queries, p_init 0.8",
    fn: as(square),
    defaults: { queries: 5000, pInit: 0.8 },
    bound: "norm",
    access: "black-box",
    stepsOption: "queries",
  },
  stadv: {
    describe: "StAdv spatial attack: flow bounded by 0.05 (normalised coords), Adam lr 0.01, 100 iterations",
    // StAdv bounds the flow, not ‖δ‖: the threat model does not apply.
    fn: (model, x, y, _threat, options) => stAdv(model, x, y, options as StAdvOptions),
    defaults: { steps: 100, bound: 0.05, lr: 0.01, tau: 0.05 },
    bound: "spatial",
    access: "white-box",
    stepsOption: "steps",
  },
};

export function attackNames(): string[] {
  return Object.keys(ATTACKS);
}

export function getAttack(name: string): AttackInfo {
  const info = ATTACKS[name];
  if (!info) throw new RangeError(`unknown attack '${name}' (known: ${attackNames().join(", ")})`);
  return info;
}

/** The attack function with its defaults merged under `options`. */
export function resolveAttack(
  name: string,
  options: Record<string, unknown> = {},
): { fn: AttackFn; options: Record<string, unknown>; bound: "norm" | "spatial"; info: AttackInfo } {
  const info = getAttack(name);
  return { fn: info.fn, options: { ...info.defaults, ...options }, bound: info.bound, info };
}

/** Runs a registered attack: `runAttack("pgd", model, x, y, threat, { steps: 20 })`. */
export function runAttack(
  name: string,
  ...[model, x, y, threat, options]: Parameters<AttackFn>
): ReturnType<AttackFn> {
  const r = resolveAttack(name, options ?? {});
  return r.fn(model, x, y, threat, r.options);
}

// ---------------------------------------------------------------------------------------------
// Suites

/** One attack of an evaluation (eval/protocol.ts runs lists of these). */
export interface AttackEntry {
  /** Name in tables, e.g. "PGD-20". */
  label: string;
  /** A registry name ("pgd", "apgd-ce", ...) or an attack function (tests, custom attacks). */
  attack: string | AttackFn;
  /** Options over the registry's defaults; `seed` is set per batch by the protocol. */
  options?: Record<string, unknown>;
  /** Default: the registry's (norm for all but StAdv); "norm" for functions. */
  bound?: "norm" | "spatial";
  /** Its result does not depend on the threat model (StAdv): run once per protocol, reused. */
  threatIndependent?: boolean;
}

export interface Suite {
  describe: string;
  attacks: AttackEntry[];
  /** Threat models the suite is defined at (the CLI's --norm/--eps replace them). */
  threats?: ThreatModel[];
  /** AutoAttack style: each attack runs only on the points still robust. */
  sequential: boolean;
}

const EOT_RAND = 20;

export const SUITES: Record<string, Suite> = {
  basic: {
    describe: "FGSM and PGD-20, each from the clean image",
    attacks: [
      { label: "FGSM", attack: "fgsm" },
      { label: "PGD-20", attack: "pgd", options: { steps: 20 } },
    ],
    sequential: false,
  },
  "aa-standard": {
    describe: "AutoAttack standard: APGD-CE, APGD-T (9 targets), Square 5000 in sequence on the points " +
      "still robust (FAB-T is not implemented)",
    attacks: [
      { label: "APGD-CE", attack: "apgd-ce" },
      { label: "APGD-T", attack: "apgd-t" },
      { label: "Square", attack: "square" },
    ],
    sequential: true,
  },
  "aa-rand": {
    describe:
      `AutoAttack rand (random defences): APGD-CE and APGD-DLR with EOT ${EOT_RAND}, 100 iterations, ` +
      "in sequence on the points still robust",
    attacks: [
      { label: "APGD-CE", attack: "apgd-ce", options: { eot: EOT_RAND } },
      { label: "APGD-DLR", attack: "apgd-dlr", options: { eot: EOT_RAND } },
    ],
    sequential: true,
  },
  fmnist: {
    describe: "the Fashion-MNIST measurement table: FGSM, PGD-20, APGD-CE, APGD-DLR, Square, StAdv " +
      "at linf 0.1 and l2 2.0, each from the clean image",
    attacks: [
      { label: "FGSM", attack: "fgsm" },
      { label: "PGD-20", attack: "pgd", options: { steps: 20 } },
      { label: "APGD-CE", attack: "apgd-ce" },
      { label: "APGD-DLR", attack: "apgd-dlr" },
      { label: "Square", attack: "square" },
      { label: "StAdv", attack: "stadv", threatIndependent: true },
    ],
    threats: [{ norm: "linf", eps: 0.1 }, { norm: "l2", eps: 2.0 }],
    sequential: false,
  },
};

/**
 * The threat models a suite runs at, given the command line: its own unless `eps` is given;
 * `norm` alone keeps its budgets of that norm (the default budget of the norm when it has none).
 */
export function suiteThreats(
  suite: Suite,
  given: { norm: ThreatModel["norm"]; eps: number | null; normGiven: boolean; defaultEps: number },
): ThreatModel[] {
  const own = suite.threats;
  if (given.eps !== null || !own) return [{ norm: given.norm, eps: given.eps ?? given.defaultEps }];
  if (!given.normGiven) return own;
  const ofNorm = own.filter((t) => t.norm === given.norm);
  return ofNorm.length ? ofNorm : [{ norm: given.norm, eps: given.defaultEps }];
}

export function suiteNames(): string[] {
  return Object.keys(SUITES);
}

export function getSuite(name: string): Suite {
  const suite = SUITES[name];
  if (!suite) throw new RangeError(`unknown suite '${name}' (known: ${suiteNames().join(", ")})`);
  return suite;
}

/** Table label of a single registered attack, e.g. "PGD-20", "APGD-CE", "Square-5000", "PGD-10 EOT-20". */
export function attackLabel(name: string, options: Record<string, unknown> = {}): string {
  const info = getAttack(name);
  const merged = { ...info.defaults, ...options };
  const base = ({ square: "Square", stadv: "StAdv" } as Record<string, string>)[name] ?? name.toUpperCase();
  const count = info.stepsOption ? merged[info.stepsOption] : undefined;
  // APGD's 100 iterations are part of its name; other counts are shown.
  const showCount = count !== undefined && !(name.startsWith("apgd") && count === 100);
  const eot = merged.eot !== undefined && merged.eot !== 1 ? ` EOT-${merged.eot}` : "";
  return `${base}${showCount ? `-${count}` : ""}${eot}`;
}
