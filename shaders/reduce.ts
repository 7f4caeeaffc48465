/**
 * Reduction over chosen axes: one invocation per output element loops over the reduced
 * elements. Kept and reduced dimensions are described by (size, stride) lists in the uniform
 * block, so one pipeline serves every shape of a given rank class.
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";

export const REDUCE_MAX_RANK = 8;

export type ReduceKind = "sum" | "max" | "min";

const INIT: Record<ReduceKind, string> = {
  sum: "0.0",
  max: "-3.4028234663852886e38",
  min: "3.4028234663852886e38",
};
const COMBINE: Record<ReduceKind, string> = {
  sum: "acc + v",
  max: "max(acc, v)",
  min: "min(acc, v)",
};

export function reduceShader(kind: ReduceKind): string {
  const dims = REDUCE_MAX_RANK / 4;
  return /* wgsl */ `
${flatIndex}
struct Params {
  n_out: u32, n_reduce: u32, kept_rank: u32, reduced_rank: u32,
  scale: f32, _pad0: u32, _pad1: u32, _pad2: u32,
  kept_shape: array<vec4<u32>, ${dims}>,
  kept_strides: array<vec4<u32>, ${dims}>,
  reduced_shape: array<vec4<u32>, ${dims}>,
  reduced_strides: array<vec4<u32>, ${dims}>,
}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

fn kept_offset(flat: u32) -> u32 {
  var rest = flat;
  var offset = 0u;
  for (var d = i32(p.kept_rank) - 1; d >= 0; d--) {
    let dim = p.kept_shape[d / 4][d % 4];
    offset += (rest % dim) * p.kept_strides[d / 4][d % 4];
    rest = rest / dim;
  }
  return offset;
}

fn reduced_offset(flat: u32) -> u32 {
  var rest = flat;
  var offset = 0u;
  for (var d = i32(p.reduced_rank) - 1; d >= 0; d--) {
    let dim = p.reduced_shape[d / 4][d % 4];
    offset += (rest % dim) * p.reduced_strides[d / 4][d % 4];
    rest = rest / dim;
  }
  return offset;
}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);
  if (o >= p.n_out) { return; }
  let base = kept_offset(o);
  var acc = ${INIT[kind]};
  for (var r = 0u; r < p.n_reduce; r++) {
    let v = x[base + reduced_offset(r)];
    acc = ${COMBINE[kind]};
  }
  out[o] = acc * p.scale;
}`;
}
