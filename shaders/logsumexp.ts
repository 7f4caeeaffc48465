/**
 * log(sum(exp(x))) along one axis, stable for any magnitude: one invocation per output walks
 * the axis once keeping the running maximum m and s = sum exp(x - m); when a larger value
 * arrives, s is rescaled by exp(m_old - m_new). Result m + log(s). Layout as in argmax.ts:
 * [outer, len, inner] with the axis in the middle.
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";

export const logSumExpShader = /* wgsl */ `
${flatIndex}
struct Params { n_out: u32, len: u32, inner: u32, _pad: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_index(gid, nwg);
  if (o >= p.n_out) { return; }
  let base = (o / p.inner) * p.len * p.inner + o % p.inner;
  // Starting from the lowest finite value (not -inf) keeps exp(v - m) free of inf - inf.
  var m = -3.4028234663852886e38;
  var s = 0.0;
  for (var k = 0u; k < p.len; k++) {
    let v = x[base + k * p.inner];
    if (v > m) {
      s = s * exp(m - v) + 1.0;
      m = v;
    } else if (v == m) {
      s += 1.0; // exp(0); for a second +inf, exp(inf - inf) would be NaN (the sum is +inf)
    } else {
      s += exp(v - m);
    }
  }
  out[o] = m + log(s);
}`;
