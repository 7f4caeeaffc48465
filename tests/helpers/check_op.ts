/**
 * The standard op check, used by every op test:
 *  1. forward on the GPU vs the float64 reference;
 *  2. the reference's analytic backward vs central finite differences of the reference forward
 *     (validates the reference itself);
 *  3. the GPU backward (autograd, seeded with a random dy) vs the reference's analytic backward.
 * Inputs are rounded through f32 so both sides see the same numbers; outputs are NaN-poisoned.
 */
import { grad } from "../../src/autograd/backward.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { tidy } from "../../src/tensor/scope.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, f32Round, type Nd, nd, Rng, type Tolerance } from "./reference.ts";

export interface OpCase {
  name: string;
  /** Input arrays (f32-rounded before use). */
  inputs: Nd[];
  /** The op under test, on GPU tensors. */
  gpu: (...xs: Tensor[]) => Tensor;
  /** Float64 reference forward. */
  ref: (...xs: Nd[]) => Nd;
  /** Float64 reference backward: given inputs and dy, returns dL/dx for each input (null: skip). */
  refGrad?: (dy: Nd, ...xs: Nd[]) => (Nd | null)[];
  /** Indices of inputs to check gradients for (default: all that refGrad returns). */
  gradInputs?: number[];
  tol?: Tolerance;
  /** Tolerance for the GPU gradient (default: tol). */
  gradTol?: Tolerance;
  /** Finite-difference step (float64 reference). */
  eps?: number;
  /** Max coordinates per input checked by finite differences. */
  fdSamples?: number;
  seed?: number;
}

function dot(a: Nd, b: Nd): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += a.data[i] * b.data[i];
  return s;
}

/** Checks refGrad against central differences of L = sum(ref(xs) * dy). */
export function checkReferenceGradient(c: OpCase, xs: Nd[], dy: Nd, rng: Rng): void {
  const analytic = c.refGrad!(dy, ...xs);
  const eps = c.eps ?? 1e-6;
  const indices = c.gradInputs ?? analytic.map((_, i) => i).filter((i) => analytic[i]);
  for (const k of indices) {
    const g = analytic[k];
    if (!g) throw new Error(`${c.name}: refGrad returned no gradient for input ${k}`);
    const n = xs[k].data.length;
    const samples = Math.min(n, c.fdSamples ?? 24);
    for (let s = 0; s < samples; s++) {
      const i = samples === n ? s : Math.floor(rng.next() * n);
      const orig = xs[k].data[i];
      xs[k].data[i] = orig + eps;
      const plus = dot(c.ref(...xs), dy);
      xs[k].data[i] = orig - eps;
      const minus = dot(c.ref(...xs), dy);
      xs[k].data[i] = orig;
      const fd = (plus - minus) / (2 * eps);
      assertClose(
        [g.data[i]],
        [fd],
        `${c.name}: reference grad of input ${k} at ${i} vs finite differences`,
        {
          rtol: 1e-4,
          atol: 1e-6,
        },
      );
    }
  }
}

export async function checkOp(c: OpCase): Promise<void> {
  const rng = new Rng(c.seed ?? 1234);
  const xs = c.inputs.map(f32Round);
  const expected = c.ref(...xs);
  const tensors = xs.map((x) => fromArray(Float32Array.from(x.data), x.shape));
  try {
    const y = tidy(() => c.gpu(...tensors));
    if (y.shape.length !== expected.shape.length || y.shape.some((d, i) => d !== expected.shape[i])) {
      throw new Error(`${c.name}: output shape [${y.shape}] != reference [${expected.shape}]`);
    }
    assertClose(await y.toArray(), expected.data, `${c.name}: forward`, c.tol);
    y.dispose();
    if (!c.refGrad) return;

    const dy = f32Round(rng.array(expected.shape));
    checkReferenceGradient(c, xs, dy, rng);
    const analytic = c.refGrad(dy, ...xs);
    const indices = c.gradInputs ?? analytic.map((_, i) => i).filter((i) => analytic[i]);
    const dyT = fromArray(Float32Array.from(dy.data), dy.shape);
    // grad() tracks the listed inputs by identity; the others act as constants.
    const { value, grads } = grad(() => c.gpu(...tensors), indices.map((i) => tensors[i]), dyT);
    for (const [j, k] of indices.entries()) {
      assertClose(
        await grads[j].toArray(),
        analytic[k]!.data,
        `${c.name}: gradient of input ${k}`,
        c.gradTol ?? c.tol,
      );
    }
    value.dispose();
    grads.forEach((g) => g.dispose());
    dyT.dispose();
  } finally {
    tensors.forEach((t) => t.dispose());
  }
}

export { nd };
