/**
 * Index of the largest element along one axis: one invocation per output walks the axis.
 * The tensor is viewed as [outer, len, inner] (the axis in the middle), so output o reads
 * x[(o / inner) * len * inner + o % inner + k * inner] for k = 0 .. len - 1.
 */
import { flatIndex, isNanWgsl, WORKGROUP_1D } from "./common.ts";

export const argmaxShader = /* wgsl */ `
${flatIndex}
struct Params { n_out: u32, len: u32, inner: u32, _pad: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<i32>;
@group(0) @binding(2) var<uniform> p: Params;

${isNanWgsl}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);
  if (o >= p.n_out) { return; }
  let base = (o / p.inner) * p.len * p.inner + o % p.inner;
  var best = x[base];
  var index = 0u;
  for (var k = 1u; k < p.len; k++) {
    let v = x[base + k * p.inner];
    // Strictly greater keeps the first index on ties; a NaN wins (as in PyTorch) unless
    // one was already found.
    if (v > best || (is_nan(v) && !is_nan(best))) {
      best = v;
      index = k;
    }
  }
  out[o] = i32(index);
}`;
