/**
 * Magic-reciprocal division (shaders/common.ts `fastDivision`): the host's magic pairs are exact
 * for every numerator below 2^31 (checked against BigInt at the edges and at random), and the
 * WGSL `div_magic` agrees with floor division on the adapter, numerators poisoned beforehand.
 */
import assert from "node:assert/strict";
import { divisionMagic, fastDivision } from "../../shaders/common.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { fillBits, grid1d, launch, output, params } from "../../src/ops/kernel.ts";
import { Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

const LIMIT = 0x80000000; // numerators are < 2^31

function numerators(d: number, rng: Rng): number[] {
  const a = [0, 1, d - 1, d, d + 1, 2 * d - 1, 2 * d, LIMIT - 1, LIMIT - 2];
  const lastMultiple = Math.floor((LIMIT - 1) / d) * d;
  a.push(lastMultiple, lastMultiple - 1);
  for (let i = 0; i < 40; i++) {
    const m = Math.floor(rng.uniform(0, 1) * Math.floor((LIMIT - 1) / d)) * d;
    a.push(m, m - 1, m + d - 1, Math.floor(rng.uniform(0, 1) * LIMIT));
  }
  return a.filter((v) => v >= 0 && v < LIMIT);
}

function divisors(rng: Rng): number[] {
  const d = [1, 2, 3, 5, 7, 31, 32, 33, 1023, 1024, 1025, 3072, 65535, 65536, 65537, LIMIT - 1, 2 ** 30 + 1];
  for (let i = 0; i < 200; i++) d.push(1 + Math.floor(rng.uniform(0, 1) * (LIMIT - 2)));
  for (let i = 0; i < 200; i++) d.push(1 + Math.floor(rng.uniform(0, 1) * 5000));
  return d;
}

Deno.test("divisionMagic: floor(a·m / 2^k) = floor(a / d) for a < 2^31 (BigInt reference)", () => {
  const rng = new Rng(3);
  for (const d of divisors(rng)) {
    const [m, shift] = divisionMagic(d);
    assert.ok(Number.isInteger(m) && m >= 0 && m < 2 ** 32, `magic of ${d} fits in u32`);
    for (const a of numerators(d, rng)) {
      const q = m === 0 ? a : Number((BigInt(a) * BigInt(m)) >> 32n) >>> shift;
      assert.equal(q, Math.floor(a / d), `${a} / ${d}`);
    }
  }
  assert.throws(() => divisionMagic(0), /divisionMagic: divisor must be an integer in \[1, 2\^31\), got 0/);
  assert.throws(() => divisionMagic(2.5), /divisionMagic/);
});

gpuTest("div_magic (WGSL) matches floor division on the adapter", async () => {
  const rng = new Rng(5);
  const pairs: [number, number][] = [];
  for (const d of divisors(rng).slice(0, 120)) {
    for (const a of numerators(d, rng).slice(0, 24)) pairs.push([a, d]);
  }
  const words = new Uint32Array(pairs.length * 4);
  pairs.forEach(([a, d], i) => words.set([a, d, ...divisionMagic(d)], i * 4));
  const input = fromArray(words, [pairs.length, 4]);
  const quotients = output("div_magic test", [pairs.length], "u32");
  // Poison: an unwritten element reads 0xffffffff, never a quotient of a < 2^31.
  fillBits(quotients, 0xffffffff);
  launch("div_magic test", KERNEL, [input, quotients, params().u32(pairs.length)], grid1d(pairs.length));
  const got = await quotients.toArray();
  pairs.forEach(([a, d], i) => assert.equal(got[i], Math.floor(a / d), `${a} / ${d}`));
  input.dispose();
  quotients.dispose();
});

const KERNEL = /* wgsl */ `
${fastDivision}
struct Params { n: u32 }
@group(0) @binding(0) var<storage, read> cases: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= p.n) { return; }
  let c = cases[gid.x];
  out[gid.x] = div_magic(c.x, c.zw);
}`;
