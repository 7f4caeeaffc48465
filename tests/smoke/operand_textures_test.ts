/**
 * Operand textures (src/device/operand_textures.ts), on both wgpu backends: the copy of a buffer
 * into a texture and the shader's index split read back every element, and the pool sizes and
 * frees textures as documented. Kernels that read textures are checked in
 * tests/ops/operand_textures_test.ts.
 */
import assert from "node:assert/strict";
import { OPERAND_TEXTURE_WIDTH, operandTextureLoad } from "../../shaders/common.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { launch, operandTextures, output, params } from "../../src/ops/kernel.ts";
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
  "operand textures: power-of-two heights; past the pool's budget a released one is destroyed",
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
        gpu.releaseOperandTexture(texture);
        assert.equal(gpu.memory().operandTextureBytes, base, "destroyed, not pooled");
        x.dispose();
      }
    } finally {
      gpu.tunables.maxPooledTextureBytes = budget;
    }
  },
);
