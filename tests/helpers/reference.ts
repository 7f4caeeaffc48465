/**
 * Float64 reference arrays and comparison helpers. Every op's TypeScript reference works on
 * `Nd` (row-major Float64Array + shape), independent of the GPU code under test.
 */
import type { Tensor } from "../../src/tensor/tensor.ts";

export interface Nd {
  data: Float64Array;
  shape: number[];
}

export function nd(shape: number[], data?: ArrayLike<number>): Nd {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = data ? Float64Array.from(data) : new Float64Array(n);
  if (d.length !== n) throw new Error(`nd: ${d.length} values for shape [${shape}]`);
  return { data: d, shape: [...shape] };
}

/** Seeded PRNG (mulberry32) so every test's random shapes and data are reproducible. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6D2B79F5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo = -1, hi = 1): number {
    return lo + (hi - lo) * this.next();
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
  array(shape: number[], lo = -1, hi = 1): Nd {
    const a = nd(shape);
    for (let i = 0; i < a.data.length; i++) a.data[i] = this.uniform(lo, hi);
    return a;
  }
}

/** Rounds through f32 so GPU and reference start from identical inputs. */
export function f32Round(a: Nd): Nd {
  return nd(a.shape, Float32Array.from(a.data));
}

export interface Tolerance {
  rtol?: number;
  atol?: number;
}

/**
 * Asserts |actual - expected| <= atol + rtol * |expected| everywhere, and that nothing is NaN
 * (poisoned outputs that a kernel never wrote). Reports the worst element.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  what: string,
  { rtol = 1e-4, atol = 1e-5 }: Tolerance = {},
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} != expected ${expected.length}`);
  }
  let worst = -1, worstErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(a) !== Number.isNaN(e)) {
      throw new Error(`${what}: element ${i} is ${a}, expected ${e} (NaN = unwritten or invalid)`);
    }
    if (Number.isNaN(e)) continue;
    if (a === e) continue; // also covers matching infinities
    const err = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (err > worstErr || (worst < 0 && err > 0)) {
      worst = i;
      worstErr = err;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} ` +
        `(|diff| ${
          Math.abs(actual[worst] - expected[worst]).toExponential(3)
        } > atol ${atol} + rtol ${rtol}·|e|)`,
    );
  }
}

/** Reads a tensor and compares it with a reference array (shape and values). */
export async function assertTensorClose(
  t: Tensor,
  expected: Nd,
  what: string,
  tol?: Tolerance,
): Promise<void> {
  if (t.shape.length !== expected.shape.length || t.shape.some((d, i) => d !== expected.shape[i])) {
    throw new Error(`${what}: shape [${t.shape}] != expected [${expected.shape}]`);
  }
  assertClose(await t.toArray(), expected.data, what, tol);
}
