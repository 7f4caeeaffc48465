import assert from "node:assert/strict";
import { add, mulScalar } from "../../src/ops/arithmetic.ts";
import { fromArray, full, ones, scalar, zeros } from "../../src/ops/creation.ts";
import { defaultGenerator, manualSeed, philox4x32, rand, randn } from "../../src/ops/random.ts";
import { keep, tidy } from "../../src/tensor/scope.ts";
import { ShapeError } from "../../src/tensor/shape.ts";
import { assertClose } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

gpuTest("creation: fromArray/toArray round trip for f32, i32, u32", async () => {
  const f = fromArray([1.5, -2, 3], [3]);
  assert.deepEqual([...await f.toArray()], [1.5, -2, 3]);
  const i = fromArray(new Int32Array([-7, 0, 2147483647]));
  assert.equal(i.dtype, "i32");
  assert.deepEqual([...await i.toArray()], [-7, 0, 2147483647]);
  const u = fromArray([1, 4294967295], [2], "u32");
  assert.deepEqual([...await u.toArray()], [1, 4294967295]);
  assert.deepEqual([...await full([2, 2], 3.25).toArray()], [3.25, 3.25, 3.25, 3.25]);
  assert.deepEqual([...await zeros([3], "i32").toArray()], [0, 0, 0]);
  assert.deepEqual([...await ones([2]).toArray()], [1, 1]);
  assert.equal(await scalar(4).item(), 4);
  assert.equal(zeros([0, 3]).size, 0);
  assert.equal((await zeros([0]).toArray()).length, 0);
  for (const t of [f, i, u]) t.dispose();
});

gpuTest("creation: bad shapes and lengths name the op and the shape", () => {
  assert.throws(() => fromArray([1, 2, 3], [2, 2]), (e: Error) => {
    assert.ok(e instanceof ShapeError);
    assert.match(e.message, /^fromArray: 3 values do not fill shape \[2, 2\] \(4 elements\)/);
    return true;
  });
  assert.throws(() => zeros([2, -1]), /full: invalid shape \[2, -1\]/);
  assert.throws(() => zeros([1.5]), /invalid shape/);
});

gpuTest("tensor: views share storage; disposal frees only with the last view", async (gpu) => {
  const before = gpu.memory().bytesInUse;
  const t = fromArray([1, 2, 3, 4, 5, 6], [2, 3]);
  const v = t.alias([3, 2]);
  assert.deepEqual(v.shape, [3, 2]);
  t.dispose();
  assert.ok(gpu.memory().bytesInUse > before, "view keeps the buffer alive");
  assert.deepEqual([...await v.toArray()], [1, 2, 3, 4, 5, 6]);
  v.dispose();
  assert.equal(gpu.memory().bytesInUse, before);
  assert.throws(() => t.buffer, /used after dispose/);
  assert.throws(() => v.alias([7]), /used after dispose|cannot view/);
  await assert.rejects(() => fromArray([1, 2]).item(), /item: tensor \[2\] has 2 elements/);
});

gpuTest("tidy: frees intermediates, keeps what is returned or kept, frees on throw", (gpu) => {
  const x = fromArray([1, 2, 3]);
  const base = gpu.memory().bytesInUse;
  let kept = null as unknown as ReturnType<typeof add>;
  const { y } = tidy(() => {
    const a = add(x, x);
    const b = mulScalar(a, 2);
    kept = keep(add(b, x));
    return { y: add(b, b) };
  });
  assert.ok(!y.isDisposed && !kept.isDisposed && !x.isDisposed);
  y.dispose();
  kept.dispose();
  assert.equal(gpu.memory().bytesInUse, base);
  assert.throws(() =>
    tidy(() => {
      add(x, x);
      throw new Error("boom");
    }), /boom/);
  assert.equal(gpu.memory().bytesInUse, base, "tensors of a failed scope are freed");
  const nested = tidy(() => tidy(() => add(x, x)));
  assert.ok(!nested.isDisposed, "returned through two scopes");
  nested.dispose();
  // Returned deep inside objects, Maps and Sets: kept; too deep to look: an error, nothing leaked.
  const deep = tidy(() => ({ a: { b: { c: { d: { e: [new Map([["t", new Set([add(x, x)])]])] } } } } }));
  const [inner] = deep.a.b.c.d.e[0].get("t")!;
  assert.ok(!inner.isDisposed, "a tensor 7 levels down is returned alive");
  inner.dispose();
  const chain = (depth: number): unknown => depth === 0 ? add(x, x) : { next: chain(depth - 1) };
  assert.throws(() => tidy(() => chain(40)), /tidy: the returned value nests deeper than 32 levels/);
  assert.equal(gpu.memory().bytesInUse, base, "the too-deep value's tensors are freed");
  // An async fn is refused, and what it made before its first await is freed.
  assert.throws(() => tidy(() => (add(x, x), Promise.resolve(1))), /must be synchronous/);
  assert.equal(gpu.memory().bytesInUse, base, "the async fn's tensors are freed");
  x.dispose();
});

gpuTest("random: rand is bit-identical to the Philox reference; streams are independent", async () => {
  // Known-answer test of Philox-4x32-10 (Random123's kat_vectors: zero counter, zero key).
  assert.deepEqual(philox4x32([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
  const n = 1000;
  const u = await rand([n], { seed: 123456789, stream: 5 }).toArray();
  for (let i = 0; i < n; i++) {
    const bits = philox4x32([i, 0, 5, 0], [123456789, 0])[0];
    assert.equal(u[i], (bits >>> 8) * 2 ** -24, `element ${i}`);
  }
  const same = await rand([n], { seed: 123456789, stream: 5 }).toArray();
  const other = await rand([n], { seed: 123456789, stream: 6 }).toArray();
  assert.deepEqual(same, u);
  assert.notDeepEqual(other, u);
  const scaled = await rand([8], { seed: 1, low: -2, high: 3 }).toArray();
  assert.ok(scaled.every((v) => v >= -2 && v < 3));
  // Seeds and streams outside the generator's key and counter would alias other draws.
  assert.throws(() => rand([2], { seed: 1.5 }), /rand: seed must be an integer in \[0, 2\^53\), got 1.5/);
  assert.throws(() => randn([2], { seed: -1 }), /randn: seed must be an integer/);
  assert.throws(
    () => rand([2], { seed: 1, stream: 2 ** 32 }),
    /rand: stream must be an integer in \[0, 2\^32\)/,
  );
  const high = await rand([4], { seed: 2 ** 40 + 3, stream: 2 ** 32 - 1 }).toArray();
  assert.deepEqual(
    high,
    Float32Array.from(
      [0, 1, 2, 3],
      (i) => (philox4x32([i, 0, 2 ** 32 - 1, 0], [3, 256])[0] >>> 8) * 2 ** -24,
    ),
  );
});

gpuTest("random: randn moments, Box-Muller vs reference, default generator advances", async () => {
  const n = 1 << 16;
  const z = await randn([n], { seed: 99, mean: 1, std: 2 }).toArray();
  let m = 0;
  for (const v of z) m += v;
  m /= n;
  let v2 = 0;
  for (const v of z) v2 += (v - m) ** 2;
  v2 /= n;
  assert.ok(Math.abs(m - 1) < 0.05, `mean ${m}`);
  assert.ok(Math.abs(Math.sqrt(v2) - 2) < 0.05, `std ${Math.sqrt(v2)}`);
  const ref = Array.from({ length: 16 }, (_, i) => {
    const [b0, b1] = philox4x32([i, 0, 0, 0], [99, 0]);
    const u1 = (b0 >>> 8) * 2 ** -24, u2 = (b1 >>> 8) * 2 ** -24;
    return 1 + 2 * Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2);
  });
  assertClose(z.slice(0, 16), ref, "randn vs Box-Muller reference", { rtol: 1e-4, atol: 1e-4 });
  manualSeed(7);
  const a = await rand([4]).toArray();
  const b = await rand([4]).toArray();
  assert.notDeepEqual(a, b, "each call draws a fresh stream");
  assert.equal(defaultGenerator.stream, 2);
  manualSeed(7);
  assert.deepEqual(await rand([4]).toArray(), a, "re-seeding replays the sequence");
});
