/**
 * Attack loss kernels: the margin and DLR losses of logits [N, K] (Croce & Hein 2020), and the
 * choice of APGD-T's target classes.
 *
 * Each loss needs only a few logits of its row: z_y (the true class), z_m with
 * m = argmax_{i != y} z_i, the sorted top logits z_pi1 >= z_pi2 >= z_pi3 >= z_pi4 and, for the
 * targeted loss, z_t. The forward kernel runs one invocation per row that scans the row once,
 * keeping the four largest logits (an insertion into a sorted list of four), and writes the loss
 * and the row's "roles" (the indices m, pi1, pi3, pi4) for the backward kernel. Ties rank the
 * lower class index first (strict comparisons), so the choice is deterministic.
 *
 * The losses are piecewise smooth; on each piece the gradient touches only the role logits:
 *   margin  L = z_y - z_m                          dL/dz_y = 1, dL/dz_m = -1
 *   DLR     L = -(z_y - z_m) / D,  D = z_pi1 - z_pi3 + 1e-12
 *           dL/dz_y = -1/D, dL/dz_m = 1/D, dL/dz_pi1 = num/D^2, dL/dz_pi3 = -num/D^2
 *   T-DLR   L = -(z_y - z_t) / D,  D = z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12
 *           dL/dz_y = -1/D, dL/dz_t = 1/D, dL/dz_pi1 = num/D^2, dL/dz_pi3,4 = -num/(2 D^2)
 * with num = the numerator inside the minus sign. A class can hold several roles (y = pi1 when
 * the row is classified correctly); the backward kernel, one invocation per logit, adds the
 * terms of every role its class holds.
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";

export type AttackLoss = "margin" | "dlr" | "dlr-targeted";

/** Invocations per workgroup of the per-row kernels. */
export const ROW_WORKGROUP = 64;

const NAN = "bitcast<f32>(0x7fc00000u)";
const LOWEST_F32 = "-3.4028234663852886e38";

/** Bindings of the optional targets tensor, numbered after logits (0) and labels (1). */
function targetsBinding(loss: AttackLoss, binding: number): string {
  return loss === "dlr-targeted"
    ? `@group(0) @binding(${binding}) var<storage, read> targets: array<i32>;`
    : "";
}

/**
 * The loss value of a row from the role logits; `num` and `den` of the DLR quotients.
 * Shared by forward and backward so both agree on D. The spread is >= 0 by construction; the
 * max() is there because llvmpipe reassociates z1 - z3 + 1e-12 into z1 + (1e-12 - z3), which
 * loses the 1e-12 and gives 0/0 = NaN when z1 == z3 (measured).
 */
function lossTerms(loss: AttackLoss): string {
  switch (loss) {
    case "margin":
      return `let num = zy - zm;`;
    case "dlr":
      return `let num = zy - zm;
  let den = max(z1 - z3, 0.0) + 1e-12;`;
    case "dlr-targeted":
      return `let num = zy - zt;
  let den = max(z1 - 0.5 * (z3 + z4), 0.0) + 1e-12;`;
  }
}

/**
 * Forward: loss[row] and roles[row] = (m, pi1, pi3, pi4). A label (or target) outside [0, K)
 * gives a NaN loss, like crossEntropy, and roles that point at class 0 (never used: the
 * backward kernel writes NaN for such rows).
 */
export function attackLossShader(loss: AttackLoss): string {
  const targeted = loss === "dlr-targeted";
  const out = targeted ? 3 : 2;
  const value = loss === "margin" ? "num" : "-num / den";
  return /* wgsl */ `
struct Params { rows: u32, k: u32 }
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<i32>;
${targetsBinding(loss, 2)}
@group(0) @binding(${out}) var<storage, read_write> loss: array<f32>;
@group(0) @binding(${out + 1}) var<storage, read_write> roles: array<vec4<u32>>;
@group(0) @binding(${out + 2}) var<uniform> p: Params;

@compute @workgroup_size(${ROW_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = gid.x + gid.y * nwg.x * ${ROW_WORKGROUP}u;
  if (row >= p.rows) { return; }
  let base = row * p.k;
  let label = labels[row];
  var valid = label >= 0 && u32(label) < p.k;
  let y = select(0u, u32(label), valid);
${
    targeted
      ? `  let target_class = targets[row];
  valid = valid && target_class >= 0 && u32(target_class) < p.k;
  let t = select(0u, u32(target_class), valid);`
      : ""
  }

  // One pass over the row: the four largest logits (v1 >= v2 >= v3 >= v4) and their classes.
  // Insertion into the sorted four without an inner loop (llvmpipe caps an invocation's loop
  // iterations in total); strict > keeps the lower class first on ties.
  var v1 = ${LOWEST_F32}; var v2 = v1; var v3 = v1; var v4 = v1;
  var c1 = 0u; var c2 = 0u; var c3 = 0u; var c4 = 0u;
  for (var j = 0u; j < p.k; j++) {
    let z = logits[base + j];
    if (z > v4) {
      if (z > v3) {
        v4 = v3; c4 = c3;
        if (z > v2) {
          v3 = v2; c3 = c2;
          if (z > v1) { v2 = v1; c2 = c1; v1 = z; c1 = j; } else { v2 = z; c2 = j; }
        } else { v3 = z; c3 = j; }
      } else { v4 = z; c4 = j; }
    }
  }
  // The best class other than y is the first or the second of the sorted list.
  let m = select(c1, c2, c1 == y);
  let zy = logits[base + y];
  let zm = logits[base + m];
  let z1 = v1;
  let z3 = v3;
  let z4 = v4;
${targeted ? "  let zt = logits[base + t];" : ""}
  ${lossTerms(loss)}
  loss[row] = select(${NAN}, ${value}, valid);
  roles[row] = vec4<u32>(m, c1, c3, c4);
}`;
}

/**
 * Backward, one invocation per logit (row, j): dx = dy[row] * sum over the roles that class j
 * holds of that role's partial derivative (see the header).
 */
export function attackLossBackwardShader(loss: AttackLoss): string {
  const targeted = loss === "dlr-targeted";
  const next = targeted ? 3 : 2;
  let partials: string;
  switch (loss) {
    case "margin":
      partials = `
  if (j == y) { g += 1.0; }
  if (j == r.x) { g -= 1.0; }`;
      break;
    case "dlr":
      partials = `
  let q = num / (den * den);
  if (j == y) { g -= 1.0 / den; }
  if (j == r.x) { g += 1.0 / den; }
  if (j == r.y) { g += q; }
  if (j == r.z) { g -= q; }`;
      break;
    case "dlr-targeted":
      partials = `
  let q = num / (den * den);
  if (j == y) { g -= 1.0 / den; }
  if (j == t) { g += 1.0 / den; }
  if (j == r.y) { g += q; }
  if (j == r.z) { g -= 0.5 * q; }
  if (j == r.w) { g -= 0.5 * q; }`;
      break;
  }
  return /* wgsl */ `
${flatIndex}
struct Params { n: u32, k: u32 }
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<i32>;
${targetsBinding(loss, 2)}
@group(0) @binding(${next}) var<storage, read> roles: array<vec4<u32>>;
@group(0) @binding(${next + 1}) var<storage, read> dy: array<f32>;
@group(0) @binding(${next + 2}) var<storage, read_write> dx: array<f32>;
@group(0) @binding(${next + 3}) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  let row = i / p.k;
  let j = i % p.k;
  let base = row * p.k;
  let label = labels[row];
  var valid = label >= 0 && u32(label) < p.k;
  let y = select(0u, u32(label), valid);
${
    targeted
      ? `  let target_class = targets[row];
  valid = valid && target_class >= 0 && u32(target_class) < p.k;
  let t = select(0u, u32(target_class), valid);
  let zt = logits[base + t];`
      : ""
  }
  let r = roles[row];
  let zy = logits[base + y];
  let zm = logits[base + r.x];
  let z1 = logits[base + r.y];
  let z3 = logits[base + r.z];
  let z4 = logits[base + r.w];
  ${lossTerms(loss)}
  var g = 0.0;${partials}
  dx[i] = select(${NAN}, g * dy[row], valid);
}`;
}

/**
 * APGD-T's k-th target, one invocation per logit (row, j): the class j != y whose rank among
 * the non-true classes (by logit, descending; ties: lower class first) is k - 1 writes itself to
 * chosen[row]. Exactly one class per row has that rank when 1 <= k <= K - 1, so every row is
 * written once (no races). Rows with an invalid label get -1.
 */
export const kthTargetShader = /* wgsl */ `
${flatIndex}
struct Params { n: u32, k: u32, rank: u32 }
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<i32>;
@group(0) @binding(2) var<storage, read_write> chosen: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  let row = i / p.k;
  let j = i % p.k;
  let base = row * p.k;
  let label = labels[row];
  if (label < 0 || u32(label) >= p.k) {
    if (j == 0u) { chosen[row] = -1; }
    return;
  }
  let y = u32(label);
  if (j == y) { return; }
  let zj = logits[base + j];
  var above = 0u; // non-true classes ranked before j
  for (var c = 0u; c < p.k; c++) {
    let zc = logits[base + c];
    if (c != y && (zc > zj || (zc == zj && c < j))) { above++; }
  }
  if (above == p.rank) { chosen[row] = i32(j); }
}`;
