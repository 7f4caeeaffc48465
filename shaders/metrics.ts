/** Classification metrics computed on the GPU, so training never reads logits back. */
import { flatIndex, isNanWgsl, WORKGROUP_1D } from "./common.ts";

/**
 * correct[i] = 1 when the first maximum of logits row i is at labels[i], else 0. A NaN counts
 * as the maximum, as in argmax (PyTorch's rule): a diverged model is not scored as right.
 */
export const correctShader = /* wgsl */ `
${flatIndex}
${isNanWgsl}
struct Params { rows: u32, classes: u32 }
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<i32>;
@group(0) @binding(2) var<storage, read_write> correct: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = flat_index(gid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.classes;
  var best = 0u;
  var best_value = logits[base];
  for (var k = 1u; k < p.classes; k++) {
    let v = logits[base + k];
    if (v > best_value || (is_nan(v) && !is_nan(best_value))) { best_value = v; best = k; }
  }
  correct[row] = select(0.0, 1.0, i32(best) == labels[row]);
}`;
