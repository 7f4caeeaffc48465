/**
 * Random tensors from the counter-based Philox generator (shaders/random.ts).
 * Every draw is named by (seed, stream): pass both for reproducible draws, or let the default
 * generator hand out a fresh stream per call (seeded with `manualSeed`).
 */
import { randomShader } from "../../shaders/random.ts";
import { checkShape, type Shape } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { grid1d, launch, output, params } from "./kernel.ts";

export interface RandomOptions {
  seed?: number;
  stream?: number;
}

/** Hands out (seed, stream) pairs: one seed, a new stream per draw. */
export class Generator {
  #stream = 0;
  constructor(public seed: number) {}

  next(): { seed: number; stream: number } {
    return { seed: this.seed, stream: this.#stream++ };
  }

  /**
   * Position in the sequence. Not checkpointed: resumed runs draw the same numbers because the
   * stage runner reseeds the generator from (seed, step) before every step.
   */
  get stream(): number {
    return this.#stream;
  }

  set stream(s: number) {
    this.#stream = s;
  }
}

export const defaultGenerator = new Generator(0x5eed);

export function manualSeed(seed: number): void {
  defaultGenerator.seed = seed;
  defaultGenerator.stream = 0;
}

function draw(
  op: string,
  shape: Shape,
  distribution: "uniform" | "normal",
  a: number,
  b: number,
  options: RandomOptions,
): Tensor {
  checkShape(op, shape);
  const { seed, stream } = options.seed === undefined
    ? defaultGenerator.next()
    : { seed: options.seed, stream: options.stream ?? 0 };
  // Philox takes a 64-bit key and a 32-bit stream: a fraction or a negative number would be
  // truncated or wrapped into another draw's bits without a word.
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`${op}: seed must be an integer in [0, 2^53), got ${seed}`);
  }
  if (!Number.isInteger(stream) || stream < 0 || stream >= 2 ** 32) {
    throw new RangeError(`${op}: stream must be an integer in [0, 2^32), got ${stream}`);
  }
  const out = output(op, shape);
  if (out.size === 0) return out;
  const p = params().u32(out.size, stream >>> 0, seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0).f32(a, b);
  launch(op, randomShader(distribution), [out, p], grid1d(out.size));
  return out;
}

/** Uniform in [low, high). */
export function rand(shape: Shape, options: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  return draw("rand", shape, "uniform", options.low ?? 0, options.high ?? 1, options);
}

/** Normal with the given mean and standard deviation. */
export function randn(shape: Shape, options: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  return draw("randn", shape, "normal", options.mean ?? 0, options.std ?? 1, options);
}

// ---- Reference (TypeScript) implementation of the same generator, for tests and host use ----

function mulhilo(a: number, b: number): [number, number] {
  const p = BigInt(a >>> 0) * BigInt(b >>> 0);
  return [Number(p >> 32n) >>> 0, Number(p & 0xffffffffn) >>> 0];
}

/** Philox-4x32-10 on the host; bit-identical to the WGSL version. */
export function philox4x32(counter: [number, number, number, number], key: [number, number]): number[] {
  let [c0, c1, c2, c3] = counter.map((v) => v >>> 0);
  let [k0, k1] = key.map((v) => v >>> 0);
  for (let round = 0; round < 10; round++) {
    const [hi0, lo0] = mulhilo(0xD2511F53, c0);
    const [hi1, lo1] = mulhilo(0xCD9E8D57, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + 0x9E3779B9) >>> 0;
    k1 = (k1 + 0xBB67AE85) >>> 0;
  }
  return [c0, c1, c2, c3];
}
