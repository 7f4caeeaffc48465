import assert from "node:assert/strict";
import { fromArray } from "../../src/ops/creation.ts";
import { defaultGenerator, philox4x32 } from "../../src/ops/random.ts";
import {
  applyRt,
  blockMask,
  combineRt3,
  complementaryMasks,
  describeRt,
  disposeRtDraw,
  drawRt,
  maskedInput,
  RandomTransform,
  rt1,
  rt2,
  rt3,
  type RtDraw,
} from "../../src/purify/mod.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { checkOp } from "../helpers/check_op.ts";
import { type Nd, nd, Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

// ---- host reference of the block draws (bit-exact: same Philox words, same Fisher-Yates) ----

/** ranks[b] = position of block b in sample n's permutation (see shaders/purify.ts). */
function hostRanks(seed: number, stream: number, n: number, blocks: number): number[] {
  const perm = Array.from({ length: blocks }, (_, i) => i);
  const key: [number, number] = [seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0];
  let bits: number[] = [];
  for (let i = 0; i + 1 < blocks; i++) {
    if (i % 4 === 0) bits = philox4x32([n, i >> 2, stream, 1], key);
    const j = i + Math.floor((bits[i % 4] * (blocks - i)) / 2 ** 32); // mulhi32, exact in doubles
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const ranks = new Array(blocks);
  perm.forEach((b, position) => (ranks[b] = position));
  return ranks;
}

/** Host masks [copies * N, 1, H, W] (copies = 1: `missing` blocks; else complementary groups). */
function hostMasks(
  seed: number,
  stream: number,
  n: number,
  h: number,
  w: number,
  grid: number,
  copies: number,
  missing: number,
): Float64Array {
  const blocks = grid * grid, bh = Math.ceil(h / grid), bw = Math.ceil(w / grid);
  const out = new Float64Array(copies * n * h * w);
  for (let s = 0; s < n; s++) {
    const ranks = hostRanks(seed, stream, s, blocks);
    for (let k = 0; k < copies; k++) {
      const lo = copies === 1 ? 0 : Math.floor((k * blocks) / copies);
      const hi = copies === 1 ? missing : Math.floor(((k + 1) * blocks) / copies);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const r = ranks[Math.floor(y / bh) * grid + Math.floor(x / bw)];
          out[((k * n + s) * h + y) * w + x] = r >= lo && r < hi ? 1 : 0;
        }
      }
    }
  }
  return out;
}

/** Per image of a [M, 1, H, W] mask: the grid x grid block values (asserting each block is constant). */
function blockValues(mask: Float32Array, m: number, h: number, w: number, grid: number): number[][] {
  const bh = Math.ceil(h / grid), bw = Math.ceil(w / grid);
  const result: number[][] = [];
  for (let i = 0; i < m; i++) {
    const values = new Array(grid * grid).fill(-1);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = mask[(i * h + y) * w + x];
        assert.ok(v === 0 || v === 1, `mask value ${v} is not 0 or 1`);
        const b = Math.floor(y / bh) * grid + Math.floor(x / bw);
        if (values[b] === -1) values[b] = v;
        assert.equal(v, values[b], `image ${i}: block ${b} is not constant at (${y}, ${x})`);
      }
    }
    assert.ok(!values.includes(-1), `image ${i}: an empty block`);
    result.push(values);
  }
  return result;
}

const count = (values: number[]) => values.reduce((a, b) => a + b, 0);

async function read(t: Tensor): Promise<Float32Array> {
  return (await t.toArray()) as Float32Array;
}

// ---- block masks ----

gpuTest("blockMask: exact missing count per sample, block structure, host reference", async () => {
  const cases: [number, number, number, number, number][] = [
    // n, h, w, grid, missing
    [5, 28, 28, 4, 0.25],
    [3, 10, 13, 4, 0.25], // uneven blocks: 3,3,3,1 rows and 4,4,4,1 columns
    [2, 9, 9, 3, 0.5], // round(4.5) = 5
    [4, 8, 8, 4, 0],
    [4, 8, 8, 4, 1],
    [2, 6, 5, 1, 1],
    [3, 32, 32, 32, 0.3], // 1024 blocks
    [2, 64, 64, 64, 0.25], // 4096 blocks: the largest grid (llvmpipe's loop limit)
  ];
  for (const [n, h, w, grid, missing] of cases) {
    const mask = blockMask(n, h, w, { grid, missing, seed: 1234, stream: 7 });
    assert.deepEqual(mask.shape, [n, 1, h, w]);
    const got = await read(mask);
    const expected = Math.round(missing * grid * grid);
    for (const values of blockValues(got, n, h, w, grid)) assert.equal(count(values), expected);
    const ref = hostMasks(1234, 7, n, h, w, grid, 1, expected);
    assert.deepEqual(Array.from(got), Array.from(ref), `mask ${n}x${h}x${w} grid ${grid} vs host reference`);
    mask.dispose();
  }
});

gpuTest("blockMask: fresh per call and per sample, reproducible with a fixed seed and stream", async () => {
  const key = (a: Float32Array) => Array.from(a).join("");
  const a = await read(blockMask(8, 8, 8));
  const b = await read(blockMask(8, 8, 8));
  assert.notEqual(key(a), key(b), "two calls without seed drew the same masks");
  const perSample = new Set(Array.from({ length: 8 }, (_, i) => key(a.subarray(i * 64, (i + 1) * 64))));
  assert.ok(perSample.size >= 6, `only ${perSample.size} distinct masks among 8 samples`);

  const fixed1 = await read(blockMask(8, 8, 8, { seed: 99, stream: 3 }));
  const fixed2 = await read(blockMask(8, 8, 8, { seed: 99, stream: 3 }));
  const other = await read(blockMask(8, 8, 8, { seed: 99, stream: 4 }));
  assert.equal(key(fixed1), key(fixed2));
  assert.notEqual(key(fixed1), key(other));
  // Sample n's mask depends on (seed, stream, n) only, not on the batch size.
  const prefix = await read(blockMask(3, 8, 8, { seed: 99, stream: 3 }));
  assert.equal(key(prefix), key(fixed1.subarray(0, 3 * 64)));
  // The default generator hands out one stream per call.
  const before = defaultGenerator.stream;
  blockMask(2, 8, 8).dispose();
  assert.equal(defaultGenerator.stream, before + 1);
});

gpuTest("blockMask: every block equally likely to be missing (2000 samples)", async () => {
  const n = 2000, grid = 4;
  const got = await read(blockMask(n, grid, grid, { grid, missing: 0.25, seed: 5, stream: 0 }));
  const freq = new Array(16).fill(0);
  for (let i = 0; i < got.length; i++) freq[i % 16] += got[i] / n;
  // Binomial std sqrt(0.25 * 0.75 / 2000) ~ 0.0097: allow 4 std.
  for (const f of freq) {
    assert.ok(
      Math.abs(f - 0.25) < 0.04,
      `block frequencies ${freq.map((v) => v.toFixed(3))}`,
    );
  }
});

gpuTest("complementaryMasks: every block missing in exactly one copy, host reference", async () => {
  const cases: [number, number, number, number, number][] = [
    [3, 28, 28, 4, 4],
    [2, 11, 7, 3, 4], // 9 blocks into 4 groups: 2, 2, 2, 3
    [1, 8, 8, 2, 2],
  ];
  for (const [n, h, w, grid, copies] of cases) {
    const masks = complementaryMasks(n, h, w, { grid, copies, seed: 42, stream: 11 });
    assert.deepEqual(masks.shape, [copies * n, 1, h, w]);
    const got = await read(masks);
    const blocks = blockValues(got, copies * n, h, w, grid);
    const plane = h * w;
    for (let s = 0; s < n; s++) {
      for (let i = 0; i < plane; i++) {
        let total = 0;
        for (let k = 0; k < copies; k++) total += got[(k * n + s) * plane + i];
        assert.equal(total, 1, `sample ${s} pixel ${i} is missing in ${total} copies`);
      }
      for (let k = 0; k < copies; k++) {
        const expected = Math.floor(((k + 1) * grid * grid) / copies) -
          Math.floor((k * grid * grid) / copies);
        assert.equal(count(blocks[k * n + s]), expected);
      }
    }
    assert.deepEqual(Array.from(got), Array.from(hostMasks(42, 11, n, h, w, grid, copies, 0)));
    masks.dispose();
  }
});

// ---- the transform and its gradient ----

/** Float64 reference of maskedInput: rows k*N + n = concat((2v - 1)(1 - m_k), 1, m_k). */
function refInput(x: Nd, mask: Float32Array, noise: Float32Array | null, sigma: number, copies: number): Nd {
  const [n, c, h, w] = x.shape, plane = h * w;
  const out = nd([copies * n, c + 2, h, w]);
  for (let k = 0; k < copies; k++) {
    for (let s = 0; s < n; s++) {
      const row = k * n + s;
      for (let i = 0; i < plane; i++) {
        const m = mask[row * plane + i];
        for (let ch = 0; ch < c; ch++) {
          const src = (s * c + ch) * plane + i;
          const v = noise ? Math.min(1, Math.max(0, x.data[src] + sigma * noise[src])) : x.data[src];
          out.data[(row * (c + 2) + ch) * plane + i] = (2 * v - 1) * (1 - m);
        }
        out.data[(row * (c + 2) + c) * plane + i] = 1;
        out.data[(row * (c + 2) + c + 1) * plane + i] = m;
      }
    }
  }
  return out;
}

function refInputGrad(
  dy: Nd,
  x: Nd,
  mask: Float32Array,
  noise: Float32Array | null,
  sigma: number,
  copies: number,
): Nd {
  const [n, c, h, w] = x.shape, plane = h * w;
  const dx = nd(x.shape);
  for (let s = 0; s < n; s++) {
    for (let ch = 0; ch < c; ch++) {
      for (let i = 0; i < plane; i++) {
        const src = (s * c + ch) * plane + i;
        const v = noise ? x.data[src] + sigma * noise[src] : 0.5;
        if (v < 0 || v > 1) continue; // the clamp passes no gradient outside [0, 1]
        for (let k = 0; k < copies; k++) {
          const row = k * n + s;
          dx.data[src] += dy.data[(row * (c + 2) + ch) * plane + i] * 2 * (1 - mask[row * plane + i]);
        }
      }
    }
  }
  return dx;
}

async function checkDraw(name: string, shape: number[], draw: RtDraw, rng: Rng): Promise<void> {
  const mask = await read(draw.mask);
  const noise = draw.noise ? await read(draw.noise) : null;
  await checkOp({
    name,
    inputs: [rng.array(shape, 0, 1)],
    gpu: (x) => applyRt(x, draw),
    ref: (x) => refInput(x, mask, noise, draw.sigma, draw.copies),
    refGrad: (dy, x) => [refInputGrad(dy, x, mask, noise, draw.sigma, draw.copies)],
    fdSamples: 40,
  });
}

gpuTest("RT1/RT2/RT3 inputs and gradients vs float64 reference (draw fixed)", async () => {
  const rng = new Rng(3);
  const shapes = [[2, 3, 8, 8], [1, 1, 10, 13], [3, 2, 7, 7]];
  for (const shape of shapes) {
    for (const kind of ["rt1", "rt2", "rt3"] as const) {
      const draw = drawRt(shape, { kind, fixedRandomness: { seed: 17, stream: 2 } });
      await checkDraw(`${kind} ${JSON.stringify(shape)}`, shape, draw, rng);
      disposeRtDraw(draw);
    }
  }
  // A large sigma clips often: the clamp's zero gradient is exercised.
  const draw = drawRt([2, 2, 8, 8], { kind: "rt2", sigma: 1.5, grid: 2, missing: 0.5 });
  await checkDraw("rt2 sigma 1.5", [2, 2, 8, 8], draw, rng);
  disposeRtDraw(draw);
});

gpuTest("RT2 noise is N(0, 1) from the same (seed, stream), masked pixels are grey", async () => {
  const { input, mask, noise } = rt2(fromArray(new Float32Array(4 * 3 * 16 * 16).fill(0.5), [4, 3, 16, 16]));
  assert.deepEqual(input.shape, [4, 5, 16, 16]);
  const z = await read(noise);
  const mean = z.reduce((a, b) => a + b, 0) / z.length;
  const variance = z.reduce((a, b) => a + (b - mean) ** 2, 0) / z.length;
  assert.ok(Math.abs(mean) < 0.1 && Math.abs(variance - 1) < 0.15, `noise mean ${mean} variance ${variance}`);
  const m = await read(mask), inp = await read(input);
  for (let s = 0; s < 4; s++) {
    for (let i = 0; i < 256; i++) {
      if (m[s * 256 + i] === 1) { for (let c = 0; c < 3; c++) assert.ok(inp[(s * 5 + c) * 256 + i] === 0); }
    }
  }
});

gpuTest("combineRt3: forward and gradient vs float64 reference", async () => {
  const rng = new Rng(8);
  for (const [n, c, h, w, copies] of [[2, 3, 8, 8, 4], [1, 1, 9, 6, 4], [3, 2, 4, 4, 2]]) {
    const masksT = complementaryMasks(n, h, w, { grid: 2, copies, seed: 3, stream: 1 });
    const masks = await read(masksT);
    const plane = h * w;
    await checkOp({
      name: `combineRt3 ${[n, c, h, w, copies]}`,
      inputs: [rng.array([copies * n, c, h, w])],
      gpu: (g) => combineRt3(g, masksT, copies),
      ref: (g) => {
        const out = nd([n, c, h, w]);
        for (let k = 0; k < copies; k++) {
          for (let i = 0; i < out.data.length; i++) {
            const s = Math.floor(i / (c * plane));
            out.data[i] += masks[(k * n + s) * plane + (i % plane)] * g.data[k * out.data.length + i];
          }
        }
        return out;
      },
      refGrad: (dy) => {
        const dg = nd([copies * n, c, h, w]);
        for (let j = 0; j < dg.data.length; j++) {
          const row = Math.floor(j / (c * plane));
          dg.data[j] = masks[row * plane + (j % plane)] * dy.data[j % dy.data.length];
        }
        return [dg];
      },
    });
    masksT.dispose();
  }
});

gpuTest("RT3 end to end: an identity purifier reconstructs the masked-out pixels exactly", async () => {
  const x = fromArray(Float32Array.from({ length: 2 * 2 * 12 * 12 }, (_, i) => (i % 7) / 7), [2, 2, 12, 12]);
  const { input, masks } = rt3(x, { sigma: 0, grid: 3 });
  assert.deepEqual(input.shape, [8, 4, 12, 12]);
  // "Purifier" = the clean image in every copy: the combination must give it back, since every
  // pixel is taken from exactly one copy.
  const clean = await read(x);
  const purified = fromArray(new Float32Array([...clean, ...clean, ...clean, ...clean]), [8, 2, 12, 12]);
  assert.deepEqual(Array.from(await read(combineRt3(purified, masks))), Array.from(await read(x)));
});

// ---- the transform object, shared and frozen draws ----

gpuTest("RandomTransform: fresh draws per call, frozen randomness, shared draws", async () => {
  const x = fromArray(Float32Array.from({ length: 2 * 1 * 8 * 8 }, (_, i) => (i % 5) / 5), [2, 1, 8, 8]);
  const key = async (t: Tensor) => Array.from(await read(t)).join(",");

  const t = new RandomTransform({ kind: "rt2" });
  const d1 = t.draw(x.shape), d2 = t.draw(x.shape);
  assert.notEqual(await key(t.apply(x, d1)), await key(t.apply(x, d2)), "two draws gave the same input");
  // A shared draw: clean and adversarial branches see the same mask and noise.
  const xAdv = fromArray(Float32Array.from({ length: 128 }, (_, i) => ((i % 5) + 0.5) / 6), [2, 1, 8, 8]);
  const clean = await read(t.apply(x, d1)), adv = await read(t.apply(xAdv, d1));
  for (let i = 0; i < clean.length; i++) {
    if (Math.floor(i / 64) % 3 !== 0) assert.equal(clean[i], adv[i]); // the ones and mask channels
  }
  assert.notEqual(clean.join(), adv.join());
  assert.equal(t.combine(t.apply(x, d1), d1).shape[0], 2); // identity for RT2

  const frozen = new RandomTransform({ kind: "rt3", fixedRandomness: { seed: 5, stream: 9 } });
  assert.equal(frozen.copies, 4);
  const f1 = await key(frozen.apply(x, frozen.draw(x.shape)));
  const f2 = await key(frozen.apply(x, frozen.draw(x.shape)));
  assert.equal(f1, f2, "frozen randomness drew different inputs");

  const { input, mask } = rt1(x);
  assert.deepEqual(input.shape, [2, 3, 8, 8]);
  assert.deepEqual(mask.shape, [2, 1, 8, 8]);
});

Deno.test("describeRt: each transform names the settings it uses, not those it ignores", () => {
  assert.equal(describeRt({ kind: "rt1", sigma: 0.5 }), "rt1 (4×4 grid, 25 % missing, no noise)");
  assert.equal(describeRt({ kind: "rt2", missing: 0.5 }), "rt2 (σ 0.25, 4×4 grid, 50 % missing)");
  assert.equal(
    describeRt({ kind: "rt3", missing: 0.5, copies: 2, grid: 8 }),
    "rt3 (σ 0.25, 8×8 grid, 2 complementary masks, 1/2 missing each)",
  );
});

gpuTest("errors name the op and the fix", () => {
  const x = fromArray(new Float32Array(2 * 1 * 8 * 8), [2, 1, 8, 8]);
  assert.throws(() => blockMask(2, 5, 5, { grid: 4 }), /blockMask.*empty blocks/);
  assert.throws(() => blockMask(2, 8, 8, { grid: 0 }), /blockMask.*grid must be an integer/);
  assert.throws(() => blockMask(2, 80, 80, { grid: 65 }), /grid must be an integer in \[1, 64\]/);
  assert.throws(() => blockMask(2, 8, 8, { missing: 1.5 }), /blockMask.*missing/);
  assert.throws(
    () => complementaryMasks(2, 8, 8, { grid: 2, copies: 5 }),
    /copies must be an integer in \[2, grid\^2 = 4\]/,
  );
  assert.throws(() => drawRt([2, 8, 8], { kind: "rt1" }), /drawRt.*\[N, C, H, W\]/);
  assert.throws(() => drawRt([2, 1, 8, 8], { kind: "rt2", sigma: -1 }), /sigma must be >= 0/);
  const draw = drawRt([3, 1, 8, 8], { kind: "rt1" });
  assert.throws(() => applyRt(x, draw), /applyRt.*does not fit/);
  assert.throws(() => maskedInput(x, draw.mask, null), /maskedInput.*\[copies \* N, 1, H, W\]/);
  assert.throws(() => combineRt3(x, draw.mask, 4), /combineRt3.*not a multiple of copies/);
  assert.throws(() => rt1(fromArray(new Float32Array(4), [4])), /rt1.*\[N, C, H, W\]/);
});
