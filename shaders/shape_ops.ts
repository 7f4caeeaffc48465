/**
 * The strided copy behind every data-moving shape op (slice, concat, permute):
 *
 *   dst[dst_offset + sum_d c_d * dst_strides[d]] = src[src_offset + sum_d c_d * src_strides[d]]
 *
 * for every coordinate c of the copied block `shape`. A slice reads a block of its input into
 * a contiguous output; concat writes each input into its block of the output; a permutation
 * reads with permuted strides. Elements are moved as raw 32-bit words, so one pipeline serves
 * every dtype.
 *
 * The host first merges dimensions that are contiguous in both source and destination (a
 * channel slice of NCHW becomes a rank-2 copy). Each invocation then copies a run of `run`
 * consecutive elements of the innermost dimension: the coordinates of the run's start cost
 * integer divisions (slow: emulated lane by lane on CPU adapters), the run's elements none.
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";

export const COPY_MAX_RANK = 8;

export const stridedCopyShader = /* wgsl */ `
${flatIndex}
struct Params {
  n_runs: u32, rank: u32, src_offset: u32, dst_offset: u32,
  // Elements per run, and runs per row of the innermost dimension.
  run: u32, runs_per_row: u32, _pad0: u32, _pad1: u32,
  shape: array<vec4<u32>, ${COPY_MAX_RANK / 4}>,
  src_strides: array<vec4<u32>, ${COPY_MAX_RANK / 4}>,
  dst_strides: array<vec4<u32>, ${COPY_MAX_RANK / 4}>,
}
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.n_runs) { return; }
  let last = p.rank - 1u;
  // Coordinates of the row (all dimensions but the innermost), innermost first; the
  // outermost needs no modulo.
  var rest = i / p.runs_per_row;
  var s = p.src_offset;
  var d = p.dst_offset;
  if (last > 0u) {
    for (var k = last - 1u; k > 0u; k--) {
      let dim = p.shape[k / 4u][k % 4u];
      let c = rest % dim;
      rest = rest / dim;
      s += c * p.src_strides[k / 4u][k % 4u];
      d += c * p.dst_strides[k / 4u][k % 4u];
    }
    s += rest * p.src_strides[0].x;
    d += rest * p.dst_strides[0].x;
  }
  // The run along the innermost dimension.
  let size = p.shape[last / 4u][last % 4u];
  let src_step = p.src_strides[last / 4u][last % 4u];
  let dst_step = p.dst_strides[last / 4u][last % 4u];
  let first = (i % p.runs_per_row) * p.run;
  let end = min(first + p.run, size);
  for (var e = first; e < end; e++) {
    dst[d + e * dst_step] = src[s + e * src_step];
  }
}`;
