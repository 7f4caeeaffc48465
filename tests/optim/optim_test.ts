import assert from "node:assert/strict";
import { fromArray } from "../../src/ops/creation.ts";
import {
  Adam,
  type AdamOptions,
  AdamW,
  applySchedule,
  constantLR,
  cosineLR,
  multiStepLR,
  type Optimizer,
  SGD,
  type SgdOptions,
  stepLR,
} from "../../src/optim/mod.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

// ---- float64 references of torch's update rules -----------------------------------------------

interface RefParam {
  p: Float64Array;
  /** Optimizer state buffers, created on the parameter's first step. */
  state: Record<string, Float64Array>;
  step: number;
}

interface SgdHyper {
  lr: number;
  momentum: number;
  dampening: number;
  nesterov: boolean;
  weightDecay: number;
}

/** torch.optim.SGD._single_tensor_sgd (maximize = false). */
function refSgdStep(x: RefParam, g: Float64Array, h: SgdHyper): void {
  x.step++;
  for (let i = 0; i < x.p.length; i++) {
    let d = g[i] + h.weightDecay * x.p[i];
    if (h.momentum !== 0) {
      const buf = (x.state.momentum_buffer ??= new Float64Array(x.p.length));
      buf[i] = x.step === 1 ? d : h.momentum * buf[i] + (1 - h.dampening) * d;
      d = h.nesterov ? d + h.momentum * buf[i] : buf[i];
    }
    x.p[i] -= h.lr * d;
  }
}

interface AdamHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  decoupled: boolean;
}

/** torch.optim.Adam / AdamW._single_tensor_adam(w) (amsgrad = false). */
function refAdamStep(x: RefParam, g: Float64Array, h: AdamHyper): void {
  x.step++;
  const m = (x.state.exp_avg ??= new Float64Array(x.p.length));
  const v = (x.state.exp_avg_sq ??= new Float64Array(x.p.length));
  const bc1 = 1 - h.beta1 ** x.step, bc2 = 1 - h.beta2 ** x.step;
  for (let i = 0; i < x.p.length; i++) {
    let gi = g[i];
    if (h.decoupled) x.p[i] *= 1 - h.lr * h.weightDecay;
    else gi += h.weightDecay * x.p[i];
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * gi;
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * gi * gi;
    x.p[i] -= (h.lr / bc1) * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + h.eps);
  }
}

// ---- harness --------------------------------------------------------------------------------

/**
 * Ten small batchnorm-like tensors besides: SGD updates small tensors several per dispatch (at
 * most 8), so they make two groups, one of them holding a tensor whose first step comes later;
 * "big.weight" is past the grouping size and gets a dispatch of its own.
 */
const SHAPES: Record<string, number[]> = {
  "fc.weight": [3, 5],
  "fc.bias": [7],
  "conv.weight": [300],
  ...Object.fromEntries(Array.from({ length: 10 }, (_, k) => [`bn${k}.weight`, [k + 2]])),
  "big.weight": [5000],
};
/**
 * Steps at which each parameter gets a gradient (conv.weight skips some: it must stay put;
 * bn3.weight starts at step 1, so its first step differs from its group's).
 */
const HAS_GRAD: Record<string, (step: number) => boolean> = {
  ...Object.fromEntries(Object.keys(SHAPES).map((name) => [name, () => true])),
  "conv.weight": (s) => s % 2 === 0,
  "bn3.weight": (s) => s >= 1,
};

function f32(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(Float32Array.from(values));
}

interface Run {
  gpuParams: Map<string, Tensor>;
  ref: Map<string, RefParam>;
  /** grads[step][name] */
  grads: Record<string, Float64Array>[];
}

function makeRun(seed: number, steps: number): Run {
  const rng = new Rng(seed);
  const gpuParams = new Map<string, Tensor>(), ref = new Map<string, RefParam>();
  for (const [name, shape] of Object.entries(SHAPES)) {
    const data = f32(rng.array(shape).data);
    const t = fromArray(Float32Array.from(data), shape);
    t.requiresGrad = true;
    t.name = name;
    gpuParams.set(name, t);
    ref.set(name, { p: data, state: {}, step: 0 });
  }
  const grads = Array.from({ length: steps }, () =>
    Object.fromEntries(
      Object.entries(SHAPES).map(([name, shape]) => [name, f32(rng.array(shape, -2, 2).data)]),
    ));
  return { gpuParams, ref, grads };
}

/** Gives every parameter its gradient for `step` (or none), as backward() would. */
function setGrads(run: Run, step: number): void {
  for (const [name, p] of run.gpuParams) {
    p.grad?.dispose();
    p.grad = HAS_GRAD[name](step) ? fromArray(Float32Array.from(run.grads[step][name]), p.shape) : null;
  }
}

async function compare(
  opt: Optimizer,
  run: Run,
  what: string,
  tol = { rtol: 2e-5, atol: 2e-6 },
): Promise<void> {
  const state = opt.state();
  for (const [name, p] of run.gpuParams) {
    const r = run.ref.get(name)!;
    assertClose(await p.toArray(), r.p, `${what}: ${name}`, tol);
    assert.equal(state.paramSteps[name] ?? 0, r.step, `${what}: step count of ${name}`);
    for (const [buffer, values] of Object.entries(r.state)) {
      const t = state.tensors[`${name}.${buffer}`];
      assert.ok(t, `${what}: state ${name}.${buffer} missing`);
      assertClose(await t.toArray(), values, `${what}: ${name}.${buffer}`, tol);
    }
  }
  for (const t of Object.values(state.tensors)) t.dispose();
}

function disposeRun(run: Run): void {
  for (const p of run.gpuParams.values()) {
    p.grad?.dispose();
    p.dispose();
  }
}

const STEPS = 5;
/** A changing learning rate, set through the schedule helper as training would. */
const schedule = cosineLR({ base: 0.1, total: STEPS, min: 0.01, warmup: 1 });

async function checkOptimizer(
  what: string,
  make: (params: Map<string, Tensor>) => Optimizer,
  refStep: (x: RefParam, g: Float64Array, lr: number) => void,
  seed: number,
): Promise<void> {
  const run = makeRun(seed, STEPS);
  const opt = make(run.gpuParams);
  try {
    for (let s = 0; s < STEPS; s++) {
      const lr = applySchedule(opt, schedule, s);
      setGrads(run, s);
      opt.step();
      for (const [name, x] of run.ref) if (HAS_GRAD[name](s)) refStep(x, run.grads[s][name], lr);
    }
    assert.equal(opt.stepCount, STEPS);
    await compare(opt, run, what);
  } finally {
    opt.disposeState();
    disposeRun(run);
  }
}

// ---- tests ----------------------------------------------------------------------------------

const SGD_CASES: Omit<SgdOptions, "params" | "lr">[] = [
  {},
  { momentum: 0.9 },
  { momentum: 0.9, nesterov: true },
  { momentum: 0.8, dampening: 0.3 },
  { weightDecay: 0.05 },
  { momentum: 0.9, nesterov: true, weightDecay: 1e-2 },
  { momentum: 0.7, dampening: 0.1, weightDecay: 0.2 },
];

gpuTest(
  "SGD: plain, momentum, Nesterov, dampening and weight decay match torch over several steps",
  async () => {
    for (const [k, options] of SGD_CASES.entries()) {
      const h: SgdHyper = {
        lr: 0,
        momentum: options.momentum ?? 0,
        dampening: options.dampening ?? 0,
        nesterov: options.nesterov ?? false,
        weightDecay: options.weightDecay ?? 0,
      };
      await checkOptimizer(
        `SGD ${JSON.stringify(options)}`,
        (params) => new SGD({ params, lr: 1, ...options }),
        (x, g, lr) => refSgdStep(x, g, { ...h, lr }),
        100 + k,
      );
    }
  },
);

const ADAM_CASES: { decoupled: boolean; options: Omit<AdamOptions, "params" | "lr"> }[] = [
  { decoupled: false, options: {} },
  { decoupled: false, options: { weightDecay: 0.1 } },
  { decoupled: false, options: { betas: [0.5, 0.9], eps: 1e-3 } },
  { decoupled: true, options: {} }, // torch's AdamW default weight decay 1e-2
  { decoupled: true, options: { weightDecay: 0.3, betas: [0.8, 0.99] } },
  { decoupled: true, options: { weightDecay: 0 } },
];

gpuTest("Adam and AdamW match torch over several steps (bias correction per parameter step)", async () => {
  for (const [k, { decoupled, options }] of ADAM_CASES.entries()) {
    const h: AdamHyper = {
      lr: 0,
      beta1: options.betas?.[0] ?? 0.9,
      beta2: options.betas?.[1] ?? 0.999,
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? (decoupled ? 1e-2 : 0),
      decoupled,
    };
    await checkOptimizer(
      `${decoupled ? "AdamW" : "Adam"} ${JSON.stringify(options)}`,
      (params) => decoupled ? new AdamW({ params, ...options }) : new Adam({ params, ...options }),
      (x, g, lr) => refAdamStep(x, g, { ...h, lr }),
      200 + k,
    );
  }
});

gpuTest("state()/loadState(): a restored optimizer continues identically", async () => {
  const makers: [string, (params: Map<string, Tensor>) => Optimizer][] = [
    ["SGD", (params) => new SGD({ params, lr: 0.1, momentum: 0.9, nesterov: true })],
    ["Adam", (params) => new Adam({ params, lr: 0.01, weightDecay: 0.1 })],
    ["AdamW", (params) => new AdamW({ params, lr: 0.01 })],
  ];
  for (const [name, make] of makers) {
    const a = makeRun(7, 6), b = makeRun(7, 6); // identical parameters and gradients
    const optA = make(a.gpuParams);
    for (let s = 0; s < 3; s++) {
      setGrads(a, s);
      optA.step();
    }
    // b's parameters take a's current values; its optimizer takes a's state.
    for (const [key, p] of a.gpuParams) {
      b.gpuParams.get(key)!.dispose();
      const copy = fromArray(await p.toArray(), p.shape);
      copy.requiresGrad = true;
      b.gpuParams.set(key, copy);
    }
    const optB = make(b.gpuParams);
    const saved = optA.state();
    optB.loadState(saved);
    for (const t of Object.values(saved.tensors)) t.dispose(); // loadState copied them
    assert.equal(optB.stepCount, 3);
    for (let s = 3; s < 6; s++) {
      setGrads(a, s);
      setGrads(b, s);
      optA.step();
      optB.step();
    }
    for (const [key, p] of a.gpuParams) {
      assert.deepEqual(
        await b.gpuParams.get(key)!.toArray(),
        await p.toArray(),
        `${name}: ${key} after resume`,
      );
    }
    const [sa, sb] = [optA.state(), optB.state()];
    assert.deepEqual(sb.paramSteps, sa.paramSteps);
    assert.deepEqual(Object.keys(sb.tensors).sort(), Object.keys(sa.tensors).sort());
    for (const key of Object.keys(sa.tensors)) {
      assert.deepEqual(await sb.tensors[key].toArray(), await sa.tensors[key].toArray(), `${name}: ${key}`);
    }
    for (const t of [...Object.values(sa.tensors), ...Object.values(sb.tensors)]) t.dispose();
    optA.disposeState();
    optB.disposeState();
    disposeRun(a);
    disposeRun(b);
  }
});

gpuTest("optimizers: zeroGrad, no readback in step(), argument and state errors", (gpu) => {
  const run = makeRun(3, 1);
  const opt = new Adam({ params: run.gpuParams });
  setGrads(run, 0);
  // step() must never read the GPU back: make any read fail while it runs.
  const read = gpu.read;
  gpu.read = () => {
    throw new Error("readback during step()");
  };
  try {
    opt.step();
  } finally {
    gpu.read = read;
  }
  opt.zeroGrad();
  for (const p of run.gpuParams.values()) assert.equal(p.grad, null);
  opt.step(); // nothing has a gradient: nothing changes
  const stepped = Object.keys(SHAPES).filter((name) => HAS_GRAD[name](0));
  assert.deepEqual(opt.state().paramSteps, Object.fromEntries(stepped.map((name) => [name, 1])));

  const p = run.gpuParams.get("fc.bias")!;
  p.grad = fromArray(new Float32Array(8), [8]);
  assert.throws(
    () => opt.step(),
    /Adam\.step: gradient of "fc.bias" is f32\[8\] but the parameter is f32\[7\]/,
  );
  opt.zeroGrad();

  const params = run.gpuParams;
  assert.throws(() => new SGD({ params, lr: 0.1, nesterov: true }), /SGD: Nesterov momentum requires/);
  assert.throws(() => new SGD({ params, lr: -1 }), /SGD: lr must be a finite number >= 0/);
  assert.throws(
    () => new Adam({ params, betas: [1, 0.9] }),
    /Adam: betas\[0\] must be a finite number in \[0, 1\)/,
  );
  assert.throws(() => new SGD({ params: [p, p], lr: 1 }), /SGD: two parameters are named "fc.bias"/);
  const labels = fromArray(new Int32Array(3), [3], "i32");
  assert.throws(() => new SGD({ params: { labels }, lr: 1 }), /SGD: parameter "labels" is i32\[3\]/);
  labels.dispose();

  const state = opt.state();
  const other = new Adam({ params: { "fc.weight": run.gpuParams.get("fc.weight")! } });
  assert.throws(() => other.loadState(state), /Adam\.loadState: state for unknown parameter "fc.bias"/);
  const partial = { ...state, tensors: { ...state.tensors } };
  delete partial.tensors["fc.bias.exp_avg_sq"];
  assert.throws(() => opt.loadState(partial), /Adam\.loadState: missing state tensor "fc.bias.exp_avg_sq"/);
  for (const t of Object.values(state.tensors)) t.dispose();
  opt.disposeState();
  disposeRun(run);
});

gpuTest("optimizers: a step that throws changes nothing, so the retry is the first step", async () => {
  const makers: [string, (params: Record<string, Tensor>) => Optimizer][] = [
    ["Adam", (params) => new Adam({ params, lr: 0.1 })],
    ["SGD", (params) => new SGD({ params, lr: 0.1, momentum: 0.9, dampening: 0.5 })],
  ];
  for (const [name, make] of makers) {
    const tried = { a: fromArray([1, 2], [2]), b: fromArray([1, 2, 3], [3]) };
    const clean = { a: fromArray([1, 2], [2]), b: fromArray([1, 2, 3], [3]) };
    const opt = make(tried), reference = make(clean);
    const unchanged = () => {
      assert.equal(opt.stepCount, 0, `${name}: step count after a failed step`);
      const state = opt.state();
      assert.deepEqual(state.paramSteps, {}, `${name}: parameter steps after a failed step`);
      for (const t of Object.values(state.tensors)) t.dispose();
    };
    tried.a.grad = fromArray([1, 1], [2]);
    tried.b.grad = fromArray([1, 1], [2]); // the wrong shape: found after "a" was ready
    assert.throws(() => opt.step(), new RegExp(`${name}\\.step: gradient of "b" is f32\\[2\\]`));
    unchanged();
    tried.b.grad.dispose(); // disposed but still set
    assert.throws(() => opt.step(), /gradient of "b" was disposed but not set to null/);
    unchanged();
    tried.b.grad = fromArray([1, 1, 1], [3]);
    opt.lr = NaN; // e.g. from a broken schedule
    assert.throws(() => opt.step(), new RegExp(`${name}\\.step: lr must be a finite number`));
    unchanged();
    opt.lr = 0.1;
    opt.step();
    clean.a.grad = fromArray([1, 1], [2]);
    clean.b.grad = fromArray([1, 1, 1], [3]);
    reference.step();
    for (const k of ["a", "b"] as const) {
      assert.deepEqual(await tried[k].toArray(), await clean[k].toArray(), `${name}: "${k}" after the retry`);
    }
    for (const o of [opt, reference]) {
      o.zeroGrad();
      o.disposeState();
    }
    for (const t of [...Object.values(tried), ...Object.values(clean)]) t.dispose();
  }
  // One tensor under two names would be updated twice per step.
  const w = fromArray([1], [1]);
  assert.throws(() => new SGD({ params: { w, tied: w }, lr: 1 }), /SGD: "tied" and "w" are the same tensor/);
  w.dispose();
});

gpuTest("schedules: values at chosen steps match the hand-computed formulas", () => {
  const close = (a: number, b: number, what: string) =>
    assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} != ${b}`);
  const step = stepLR({ base: 0.1, stepSize: 3, gamma: 0.5 });
  [[0, 0.1], [2, 0.1], [3, 0.05], [5, 0.05], [6, 0.025], [9, 0.0125]].forEach(([s, v]) =>
    close(step(s), v, `stepLR ${s}`)
  );
  close(stepLR({ base: 1, stepSize: 2 })(4), 0.01, "stepLR default gamma 0.1");

  const multi = multiStepLR({ base: 1, milestones: [2, 5], gamma: 0.1 });
  [[0, 1], [1, 1], [2, 0.1], [4, 0.1], [5, 0.01], [100, 0.01]].forEach(([s, v]) =>
    close(multi(s), v, `multiStepLR ${s}`)
  );

  // cos(pi/3) = 1/2, so a third of the way the rate is 3/4 of the way from min to base.
  const cos = cosineLR({ base: 2, total: 6 });
  [[0, 2], [2, 1.5], [3, 1], [4, 0.5], [6, 0], [9, 0]].forEach(([s, v]) => close(cos(s), v, `cosineLR ${s}`));
  const warm = cosineLR({ base: 1, total: 12, min: 0.1, warmup: 2 });
  [[0, 0.5], [1, 1], [2, 1], [7, 0.55], [12, 0.1], [20, 0.1]].forEach(([s, v]) =>
    close(warm(s), v, `warmup ${s}`)
  );
  close(constantLR(0.3)(17), 0.3, "constantLR");

  const opt = { lr: 0 };
  assert.equal(applySchedule(opt, step, 3), 0.05);
  assert.equal(opt.lr, 0.05);
  assert.throws(() => step(-1), /stepLR: step must be an integer >= 0/);
  assert.throws(
    () => cosineLR({ base: 1, total: 3, warmup: 3 }),
    /cosineLR: need integers 0 <= warmup < total/,
  );
  assert.throws(() => stepLR({ base: 1, stepSize: 0 }), /stepLR: stepSize must be an integer >= 1/);
});
