/**
 * Operand textures (src/device/operand_textures.ts), on both wgpu backends: the copy of a buffer
 * into a texture and the shader's index split read back every element, the pool sizes and
 * frees textures as documented, and copies are kept and dropped as src/device/operand_copies.ts
 * says. Kernels that read textures are checked in
 * tests/ops/operand_textures_test.ts.
 */
import assert from "node:assert/strict";
import { OPERAND_TEXTURE_WIDTH, operandTextureLoad } from "../../shaders/common.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { currentGpu } from "../../src/device/runtime.ts";
import { fillBits, launch, operandTextures, output, params } from "../../src/ops/kernel.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { gpuTest } from "../helpers/setup.ts";

/** Copies a texture's first `n` elements into a buffer through `operandTextureLoad`. */
function readBack(vec4: boolean): string {
  const T = vec4 ? "vec4<f32>" : "f32";
  return /* wgsl */ `
@group(0) @binding(0) var src: texture_2d<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<${T}>;
@group(0) @binding(2) var<uniform> n: vec4<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * 64u * 1024u;
  if (i < n.x) { out[i] = ${operandTextureLoad("src", "i", vec4)}; }
}`;
}

gpuTest("operand textures: every element comes back, in full and partial rows", async (gpu) => {
  // Under one row, a row and a bit (the partial last row), and several rows (a taller class).
  for (const texels of [5, OPERAND_TEXTURE_WIDTH + 3, 3 * OPERAND_TEXTURE_WIDTH + 1]) {
    for (const vec4 of [true, false]) {
      const floats = texels * (vec4 ? 4 : 1);
      const data = Float32Array.from({ length: floats }, (_, i) => i * 0.5 - 7);
      const x = fromArray(data, [floats]);
      const [texture] = operandTextures([x], [vec4]) ?? [];
      assert.ok(texture, `a ${floats}-float tensor fits a texture`);
      const y = output("readBack", [floats]);
      const groups = Math.ceil(texels / 64);
      launch("readBack", readBack(vec4), [texture, y, params().u32(texels)], [
        Math.min(groups, 1024),
        Math.ceil(groups / 1024),
      ]);
      gpu.releaseOperandTexture(texture);
      assert.ok(gpu.memory().operandTextureBytes >= floats * 4, "memory() counts operand textures");
      const got = await y.toArray();
      assert.deepEqual(got, data, `${texels} texels, ${vec4 ? "rgba32float" : "r32float"}`);
      x.dispose();
      y.dispose();
    }
  }
});

gpuTest(
  "operand textures: power-of-two heights; past the pool's budget a dropped one is destroyed",
  (gpu) => {
    const budget = gpu.tunables.maxPooledTextureBytes;
    gpu.operandTextures.trim();
    gpu.tunables.maxPooledTextureBytes = 0;
    try {
      const base = gpu.memory().operandTextureBytes;
      // Heights are powers of two (see heightClass): 3.5 rows of vec4 texels take 4, 37 take 64.
      for (const [rows, height] of [[3.5, 4], [37, 64]]) {
        const floats = Math.round(rows * OPERAND_TEXTURE_WIDTH) * 4;
        const x = fromArray(new Float32Array(floats), [floats]);
        const [texture] = operandTextures([x], [true]) ?? [];
        assert.ok(texture);
        assert.equal(texture.height, height, `${rows} rows`);
        assert.equal(gpu.memory().operandTextureBytes, base + height * OPERAND_TEXTURE_WIDTH * 16);
        // Released, it stays as x's kept copy (src/device/operand_copies.ts) until x goes.
        gpu.releaseOperandTexture(texture);
        assert.equal(gpu.memory().operandTextureBytes, base + height * OPERAND_TEXTURE_WIDTH * 16);
        x.dispose();
        assert.equal(gpu.memory().operandTextureBytes, base, "destroyed, not pooled");
      }
    } finally {
      gpu.tunables.maxPooledTextureBytes = budget;
    }
  },
);

/** Sums a buffer into another, reading it through a read-only binding. */
const sumRaw = /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1)
fn main() {
  var total = 0.0;
  for (var i = 0u; i < arrayLength(&src); i++) { total += src[i]; }
  out[0] = total;
}`;

const fillRaw = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < arrayLength(&out)) { out[gid.x] = 7.0; }
}`;

/** x read through an operand texture (kept copy or new) and back into a buffer. */
async function readThroughTexture(
  x: Tensor,
  vec4: boolean,
): Promise<{ data: Float32Array; texture: GPUTexture }> {
  const [texture] = operandTextures([x], [vec4]) ?? [];
  assert.ok(texture, "fits a texture");
  const texels = x.size / (vec4 ? 4 : 1);
  const y = output("readBack", [x.size]);
  launch("readBack", readBack(vec4), [texture, y, params().u32(texels)], [Math.ceil(texels / 64)]);
  currentGpu().releaseOperandTexture(texture);
  const data = await y.toArray() as Float32Array;
  y.dispose();
  return { data, texture };
}

gpuTest(
  "operand copies: kept through read-only bindings, until the buffer is written, rewritten or handed to another tensor",
  async (gpu) => {
    const n = 4 * OPERAND_TEXTURE_WIDTH + 8;
    const values = (k: number) => Float32Array.from({ length: n }, (_, i) => i * 0.25 + k);
    const x = fromArray(values(1), [n]);
    const copies = () => gpu.operandCopies.copies;
    const start = copies(), hits = gpu.operandCopies.hits;

    const first = await readThroughTexture(x, true);
    assert.deepEqual(first.data, values(1));
    const again = await readThroughTexture(x, true);
    assert.deepEqual(again.data, values(1));
    assert.equal(copies(), start + 1, "the second read takes the kept copy");
    assert.equal(gpu.operandCopies.hits, hits + 1);
    assert.equal(again.texture, first.texture);
    // Another format is another copy.
    assert.deepEqual((await readThroughTexture(x, false)).data, values(1));
    assert.equal(copies(), start + 2);

    // A dispatch that binds the buffer read-only (here to sum it elsewhere) leaves it as it was.
    const total = output("sumRaw", [1]);
    launch("sumRaw", sumRaw, [x.buffer, total], [1]);
    assert.deepEqual((await readThroughTexture(x, true)).data, values(1));
    assert.equal(copies(), start + 2, "read-only: the kept copy stays");
    total.dispose();

    // A dispatch that binds the buffer writably (here writes it).
    fillBits(x, new Uint32Array(new Float32Array([2]).buffer)[0]);
    assert.deepEqual((await readThroughTexture(x, true)).data, new Float32Array(n).fill(2));
    assert.equal(copies(), start + 3);

    // A host write.
    gpu.write(x.buffer, values(3));
    assert.deepEqual((await readThroughTexture(x, true)).data, values(3));
    assert.equal(copies(), start + 4);

    // Written while an op holds the copy: the held texture is not kept.
    const [held] = operandTextures([x], [true])!;
    assert.equal(copies(), start + 4, "held: the kept copy");
    fillBits(x, 0);
    gpu.releaseOperandTexture(held);
    const fresh = await readThroughTexture(x, true);
    assert.deepEqual(fresh.data, new Float32Array(n));
    assert.equal(copies(), start + 5);
    assert.equal(fresh.texture, held, "the stale texture went back to the pool (and came out again)");

    // A dispatch that binds the raw buffer (not a tensor's binding).
    launch("fillRaw", fillRaw, [x.buffer], [Math.ceil(n / 64)]);
    assert.deepEqual((await readThroughTexture(x, true)).data, new Float32Array(n).fill(7));
    assert.equal(copies(), start + 6);

    // Disposed: the pool hands the buffer to the next tensor of its size, with other data.
    const buffer = x.buffer;
    x.dispose();
    const z = fromArray(values(5), [n]);
    assert.equal(z.buffer, buffer, "the pool reused the buffer (the case under test)");
    assert.deepEqual((await readThroughTexture(z, true)).data, values(5));
    assert.equal(copies(), start + 7);
    z.dispose();
  },
);

gpuTest("operand copies: past the idle budget the least recently used copy goes", async (gpu) => {
  const n = 4 * OPERAND_TEXTURE_WIDTH;
  const [a, b, c] = [1, 2, 3].map((k) => fromArray(new Float32Array(n).fill(k), [n]));
  const budget = gpu.tunables.maxIdleOperandCopyBytes;
  gpu.operandCopies.clear();
  try {
    const read = async (t: Tensor) => (await readThroughTexture(t, true)).data[0];
    assert.equal(await read(a), 1);
    const oneCopy = gpu.operandCopies.idleBytes;
    assert.ok(oneCopy > 0, "an idle kept copy is counted");
    gpu.tunables.maxIdleOperandCopyBytes = 2 * oneCopy;
    assert.equal(await read(b), 2);
    assert.equal(await read(a), 1); // a is now the most recently used
    const copies = gpu.operandCopies.copies;
    assert.equal(await read(c), 3); // over budget: b goes, a stays
    assert.equal(gpu.operandCopies.idleBytes, 2 * oneCopy);
    assert.equal(await read(a), 1);
    assert.equal(gpu.operandCopies.copies, copies + 1, "a was kept");
    assert.equal(await read(b), 2);
    assert.equal(gpu.operandCopies.copies, copies + 2, "b was dropped");
  } finally {
    gpu.tunables.maxIdleOperandCopyBytes = budget;
    [a, b, c].forEach((t) => t.dispose());
  }
});
