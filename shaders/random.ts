/**
 * Counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11): element i of a draw
 * gets the bits of philox(counter = (i, 0, stream, 0), key = seed). No state is kept, so any
 * element can be regenerated exactly (a backward pass can recompute its forward's noise), and
 * the TypeScript reference in src/ops/random.ts reproduces every bit.
 */
import { flatIndex, mulHi, WORKGROUP_1D } from "./common.ts";

export const philox = /* wgsl */ `
${mulHi}

fn philox4x32(counter: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key_in;
  for (var round = 0u; round < 10u; round++) {
    let hi0 = mul_hi(0xD2511F53u, c.x);
    let lo0 = 0xD2511F53u * c.x;
    let hi1 = mul_hi(0xCD9E8D57u, c.z);
    let lo1 = 0xCD9E8D57u * c.z;
    c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
  }
  return c;
}

// 24 random bits to a float in [0, 1), exactly representable in f32.
fn unit_float(bits: u32) -> f32 {
  return f32(bits >> 8u) * 5.9604644775390625e-8;
}
`;

export type Distribution = "uniform" | "normal";

export function randomShader(distribution: Distribution): string {
  // Uniform: low + (high - low) * u.  Normal (Box-Muller): mean + std * sqrt(-2 ln u1) cos(2 pi u2),
  // with u1 in (0, 1] so the log is finite.
  const value = distribution === "uniform"
    ? "p.a + (p.b - p.a) * unit_float(bits.x)"
    : "p.a + p.b * sqrt(-2.0 * log(1.0 - unit_float(bits.x))) * cos(6.283185307179586 * unit_float(bits.y))";
  return /* wgsl */ `
${flatIndex}
${philox}
struct Params { n: u32, stream: u32, seed_lo: u32, seed_hi: u32, a: f32, b: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  let bits = philox4x32(vec4<u32>(i, 0u, p.stream, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
  out[i] = ${value};
}`;
}
