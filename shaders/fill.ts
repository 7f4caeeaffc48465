import { flatIndex, WORKGROUP_1D } from "./common.ts";

/** Fills a buffer with one 32-bit pattern (zeros, a constant, or NaN poison). */
export const fillShader = /* wgsl */ `
${flatIndex}
struct Params { n: u32, bits: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i < p.n) { out[i] = p.bits; }
}`;
