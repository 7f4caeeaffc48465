/**
 * Batch normalisation over NCHW tensors, per channel c (M = N·H·W values each):
 *
 *   forward   y = (x − mean_c) · invstd_c · gamma_c + beta_c      (optionally ReLU'd)
 *   backward  dbeta_c  = Σ dy          dgamma_c = Σ dy · x̂
 *             dx = gamma_c · invstd_c · (dy − Σdy/M − x̂ · Σ(dy·x̂)/M)   (training)
 *             dx = gamma_c · invstd_c · dy                                (eval)
 *   with x̂ = (x − mean_c) · invstd_c, and dy masked by y > 0 when ReLU is fused.
 *
 * Both directions are a per-channel reduction followed by one elementwise pass:
 *   1. `channelSumsShader`: the "lanes" of a channel each sum two quantities over part of
 *      the channel's elements and write partial sums (no float atomics: deterministic);
 *   2. a finalize kernel, one invocation per channel, adds the partials in a fixed order;
 *   3. `normalizeShader` / `batchNormBackwardDataShader` stream over x (and dy) once more.
 * So the forward reads x twice and writes y once; the backward reads x and dy twice each.
 * On llvmpipe the three steps can run in one dispatch: one workgroup per channel reduces it,
 * finishes it and then streams over it again (`ChannelSumsSpec.apply`).
 *
 * Elements are processed in "units": a vec4 of four neighbours when H·W is a multiple of 4
 * (fewer loads and index computations), else single floats. A unit never straddles two
 * channels, so all its elements share the per-channel constants.
 *
 * Two variants of the reduction (chosen per adapter class by the op):
 *   "cpu": each invocation is one lane, sums a short fixed run of units and writes its own
 *          partial: no workgroup memory and no barriers, which are slow on llvmpipe (a
 *          barrier is a coroutine switch; storage loads are per-lane scalar loops);
 *   "gpu": classic: 256 invocations per workgroup stride over the channel (coalesced), then
 *          a tree reduction in workgroup memory, one partial per workgroup.
 */
import { wgsl } from "wgsl-preprocessor";
import { keepNanWgsl, memoizeShader, readOperand } from "./common.ts";

export type BatchNormVariant = "cpu" | "gpu";

/** Invocations per workgroup of the reduction kernels, per variant. */
export const REDUCE_WORKGROUP: Record<BatchNormVariant, number> = { cpu: 64, gpu: 256 };
/** Invocations per workgroup of the streaming (elementwise) passes. */
export const BN_WORKGROUP = 256;
/**
 * Invocations per workgroup of the per-channel finalize kernels (one channel each): small, so
 * even 64 channels spread over several workgroups (CPU threads on llvmpipe).
 */
export const FINALIZE_WORKGROUP = 8;

/** Per-unit type and helpers: `T` is vec4<f32> or f32. */
function unitType(vec4: boolean): string {
  return vec4
    ? `alias T = vec4<f32>;
fn hsum(v: T) -> f32 { return v.x + v.y + v.z + v.w; }
fn relu(v: T) -> T {
  let nan = (bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
  return select(max(v, T(0.0)), v, nan);
}`
    : `alias T = f32;
fn hsum(v: T) -> f32 { return v; }
fn relu(v: T) -> T { return keep_nan(v, max(v, 0.0)); }
${keepNanWgsl}`;
}

/**
 * The affine part of the forward, shared by every kernel that needs y (the ReLU mask in the
 * backward is recomputed from x rather than stored, so it must match the forward exactly).
 */
const affine = /* wgsl */ `
fn bn_affine(v: T, mean: f32, scale: f32, shift: f32) -> T {
  return (v - T(mean)) * T(scale) + T(shift);
}`;

/** Flat index of 1-D workgroups spilled over a 2-D grid (WebGPU caps a dimension at 65,535). */
function flat(size: number): string {
  return `fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * ${size}u;
}`;
}

/**
 * Finishing a channel from its totals s = (Σ(x−K), Σ(x−K)²), shared by the finalize kernel and
 * the reduction that finishes its channels itself: the mean and biased variance, and the running
 * statistics' update (PyTorch: running = (1 − m)·running + m·batch, the running variance from the
 * unbiased variance var·M/(M−1)). Needs stats, running_mean, running_var and p.count, p.eps,
 * p.momentum, p.unbias.
 */
const finishStats = /* wgsl */ `
fn finish_stats(c: u32, s: vec2<f32>, k: f32) -> vec2<f32> {
  let shifted_mean = s.x / p.count;
  let mean = k + shifted_mean;
  let variance = max(s.y / p.count - shifted_mean * shifted_mean, 0.0);
  let saved = vec2<f32>(mean, inverseSqrt(variance + p.eps));
  stats[c] = saved;
  running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
  running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * variance * p.unbias;
  return saved;
}`;

/**
 * Finishing a channel of the backward from s = (Σdy, Σdy·x̂): dbeta, dgamma and, in training,
 * the means dx needs (coef = s / M, returned; stored when `storeCoef`). Needs dgamma, dbeta,
 * [coef] and p.count.
 */
function finishGrad(storeCoef: boolean): string {
  return wgsl`
fn finish_grad(c: u32, s: vec2<f32>) -> vec2<f32> {
  dbeta[c] = s.x;
  dgamma[c] = s.y;
#if ${storeCoef}
  coef[c] = s / p.count;
#endif
  return s / p.count;
}`;
}

/**
 * The elementwise step of each direction on one unit at index u, shared by the streaming passes
 * and the reduction that also applies its channel (`apply`). Reads the private channel
 * constants mean, scale, shift (forward); mean, invstd, scale, [shift], mean_dy, mean_dy_xhat
 * (backward).
 */
function normalizeUnit(relu: boolean, residual: boolean): string {
  return wgsl`
fn do_unit(u: u32) {
#if ${residual}
  let out = bn_affine(load_x(u), mean, scale, shift) + load_res(u);
#else
  let out = bn_affine(load_x(u), mean, scale, shift);
#endif
#if ${relu}
  y[u] = relu(out);
#else
  y[u] = out;
#endif
}`;
}

/**
 * The fused ReLU's mask is y > 0, so a NaN y gets no gradient, where PyTorch's relu passes it
 * (RELU_GRAD in ops/unary.ts does): deliberate, as in training a NaN makes the whole channel's
 * statistics, hence every dx of it, NaN anyway, and the NaN test would cost this hot loop.
 */
function backwardDataUnit(training: boolean, relu: boolean): string {
  const needsX = training || relu;
  return wgsl`
fn do_unit(u: u32) {
#if ${needsX}
  let v = load_x(u);
#endif
#if ${relu}
  let g = select(T(0.0), load_dy(u), bn_affine(v, mean, scale, shift) > T(0.0));
#else
  let g = load_dy(u);
#endif
#if ${training}
  let xhat = (v - T(mean)) * T(invstd);
  dx[u] = T(scale) * (g - T(mean_dy) - xhat * T(mean_dy_xhat));
#else
  dx[u] = T(scale) * g;
#endif
}`;
}

export interface ChannelSumsSpec {
  /** "stats": Σ(x−K), Σ(x−K)² with K a per-channel shift; "grad": Σdy, Σdy·x̂. */
  kind: "stats" | "grad";
  variant: BatchNormVariant;
  vec4: boolean;
  /** "grad" only: mask dy with y > 0 (fused ReLU); binds gamma and beta. */
  relu?: boolean;
  /**
   * "cpu" only: units per lane, a fixed count so the loop unrolls (llvmpipe runs short
   * straight-line loops far faster than long data-dependent ones).
   */
  run?: number;
  /** "cpu" only: `run` divides the units of a plane, so a lane's run stays in one plane. */
  aligned?: boolean;
  /**
   * One workgroup per channel adds the whole channel and finishes it itself, instead of
   * writing partial sums for a finalize kernel (one dispatch less per reduction):
   *   "stats": stats[c] = (mean, 1/sqrt(var + eps)) and the running statistics' update;
   *   "grad":  dbeta[c] = Σdy, dgamma[c] = Σdy·x̂ and, in training, coef[c] = (Σdy, Σdy·x̂) / M.
   * "cpu": the workgroup's lanes take runs of `run` units, `REDUCE_WORKGROUP.cpu` runs apart;
   * "gpu": the grid has one part per channel. Either way a tree adds the lanes.
   */
  finalize?: boolean;
  /** "grad" with `finalize`: also write coef (training). */
  training?: boolean;
  /**
   * "cpu" with `finalize` only: the workgroup then runs the elementwise pass over its channel
   * too, while the channel is still in its core's cache, so a direction is one dispatch:
   * "stats" writes y (ReLU'd when `relu`), "grad" writes the training dx (coef is not stored).
   */
  apply?: boolean;
  /** "stats" with `apply`: y = bn(x) + res (then ReLU'd when `relu`), a residual join fused in. */
  residual?: boolean;
  /**
   * "stats" with `apply`: the statistics come from the producer's per-part moments of x
   * (ChannelMoments: moments[c * parts + j] = (count, mean, M2, 0)), merged in a fixed order by
   * Chan et al.'s pairwise update, instead of a pass over x: x is read once, to normalise it.
   */
  moments?: boolean;
  /** Read x, dy and res from operand textures instead of storage buffers (see `readOperand` in common.ts). */
  textures?: boolean;
}

/**
 * Per-channel partial sums. Bindings: x, [dy, stats, [gamma, beta]], partials, params; with
 * `finalize` the outputs are instead stats, running_mean, running_var ("stats") or dgamma,
 * dbeta, [coef] ("grad"); with `apply`: x, [moments], gamma, beta, [res], stats, running_mean,
 * running_var, y ("stats") or x, dy, stats, gamma, [beta], dgamma, dbeta, dx ("grad").
 * Units of channel c are numbered u = 0 .. N·(units per plane) − 1, image by image.
 *   "cpu": lane l sums the run of units [l·run, l·run + run) and writes its own partial;
 *   "gpu": lane l (of parts·256) visits units l, l + lanes, ... (coalesced), then the
 *          workgroup adds its 256 lanes with a tree and writes one partial.
 *   `finalize`, "cpu": one workgroup per channel; lane l sums the runs that start at units
 *          l·run, (l + 64)·run, ..., a tree adds the 64 lanes and lane 0 finishes the channel;
 *   `finalize`, "gpu": as "gpu" with one part per channel, and lane 0 finishes it.
 *
 * "stats" sums deviations from K = the channel's first element instead of raw x: then
 * var = Σ(x−K)²/M − (Σ(x−K)/M)² does not lose digits to cancellation when |mean| >> std.
 */
export const channelSumsShader = memoizeShader(generateChannelSumsShader);

/**
 * WGSL `fn name(c, first)` calling `unit(index)` on the run of units [first, first + run) of
 * channel c: consecutive addresses when the run lies in one plane (`aligned`), else each unit
 * is bounds-checked and located on its own.
 */
function runFunction(name: string, unit: string, run: number, aligned: boolean): string {
  return aligned
    ? `fn ${name}(c: u32, first: u32) {
  let base = unit_index(c, first);
  for (var j = 0u; j < ${run}u; j++) { ${unit}(base + j); }
}`
    : `fn ${name}(c: u32, first: u32) {
  for (var j = 0u; j < ${run}u; j++) {
    let u = first + j;
    if (u < p.units_per_channel) { ${unit}(unit_index(c, u)); }
  }
}`;
}

function generateChannelSumsShader(spec: ChannelSumsSpec): string {
  const wg = REDUCE_WORKGROUP[spec.variant];
  const grad = spec.kind === "grad";
  const gpu = spec.variant === "gpu";
  const run = spec.run ?? 16;
  const finalize = spec.finalize ?? false;
  // The cpu variant's whole-channel form: runs strided by the workgroup, then a tree.
  const whole = !gpu && finalize;
  const tree = gpu || whole;
  const apply = whole && (spec.apply ?? false);
  // "grad": dy is masked by the forward's ReLU; "stats" with apply: y is ReLU'd.
  const relu = (grad || apply) && (spec.relu ?? false);
  const maskDy = grad && relu;
  const residual = apply && !grad && (spec.residual ?? false);
  const fromMoments = apply && !grad && (spec.moments ?? false);
  const aligned = !gpu && (spec.aligned ?? false);
  let b = 0;
  const bind = (decl: string) => `@group(0) @binding(${b++}) ${decl};`;
  const operand = (name: string) => readOperand(name, spec.vec4, spec.textures ?? false);
  const x = operand("x"), dy = operand("dy"), res = operand("res");
  // Inputs, outputs, then the uniform block.
  const all = [
    bind(x.decl),
    ...(fromMoments ? [bind("var<storage, read> moments: array<vec4<f32>>")] : []),
    ...(grad ? [bind(dy.decl), bind("var<storage, read> stats: array<vec2<f32>>")] : []),
    ...(maskDy || apply ? [bind("var<storage, read> gamma: array<f32>")] : []),
    ...(maskDy || (apply && !grad) ? [bind("var<storage, read> beta: array<f32>")] : []),
    ...(residual ? [bind(res.decl)] : []),
    ...(!finalize ? [bind("var<storage, read_write> partials: array<vec2<f32>>")] : grad
      ? [
        bind("var<storage, read_write> dgamma: array<f32>"),
        bind("var<storage, read_write> dbeta: array<f32>"),
        ...(spec.training && !apply ? [bind("var<storage, read_write> coef: array<vec2<f32>>")] : []),
      ]
      // The running tensors are bound once, read_write (a buffer bound both read and
      // read_write in one dispatch is a validation error).
      : [
        bind("var<storage, read_write> stats: array<vec2<f32>>"),
        bind("var<storage, read_write> running_mean: array<f32>"),
        bind("var<storage, read_write> running_var: array<f32>"),
      ]),
    ...(apply ? [bind(`var<storage, read_write> ${grad ? "dx" : "y"}: array<T>`)] : []),
    bind("var<uniform> p: Params"),
    x.loader,
    ...(grad ? [dy.loader] : []),
    ...(residual ? [res.loader] : []),
  ].join("\n");
  return wgsl`
${unitType(spec.vec4)}
${affine}
${flat(wg)}
struct Params {
  channels: u32,
  units_per_plane: u32,   // H·W / unit width
  units_per_channel: u32, // N · units_per_plane
  lanes: u32,             // lanes per channel
  parts: u32,             // partial sums per channel
  // finalize only: values per channel M, and for "stats" eps, momentum, M/(M−1)
  count: f32,
  eps: f32,
  momentum: f32,
  unbias: f32,
}
${all}
${!finalize ? "" : grad ? finishGrad((spec.training ?? false) && !apply) : finishStats}
#if ${tree}
var<workgroup> shared_sums: array<vec2<f32>, ${wg}>;
#endif
#if ${fromMoments}
var<workgroup> shared_moments: array<vec3<f32>, ${wg}>;

// Moments (count, mean, M2) of the union of two disjoint parts (Chan, Golub and LeVeque):
// the means' difference d adds d² · na · nb / n to M2, with no cancellation.
fn merge_moments(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
  let n = a.x + b.x;
  if (n == 0.0) { return a; }
  let d = b.y - a.y;
  let f = b.x / n;
  return vec3<f32>(n, a.y + d * f, a.z + b.z + d * d * a.x * f);
}
#endif

// The channel's constants and running sums, shared by main() and add_unit().
var<private> sum1: T;
var<private> sum2: T;
#if ${grad}
var<private> invstd: f32;
#else
var<private> k: T;
#endif
#if ${grad || apply}
var<private> mean: f32;
var<private> scale: f32;
var<private> shift: f32;
#endif
#if ${grad && apply}
var<private> mean_dy: f32;
var<private> mean_dy_xhat: f32;
#endif

// Adds the unit at index 'at' of x (and dy).
fn add_unit(at: u32) {
#if ${grad}
  let v = load_x(at);
  let xhat = (v - T(mean)) * T(invstd);
#if ${maskDy}
  let g = select(T(0.0), load_dy(at), bn_affine(v, mean, scale, shift) > T(0.0));
#else
  let g = load_dy(at);
#endif
  sum1 += g;
  sum2 += g * xhat;
#else
  let d = load_x(at) - k;
  sum1 += d;
  sum2 += d * d;
#endif
}

// Index in x of unit u of channel c.
fn unit_index(c: u32, u: u32) -> u32 {
  let n = u / p.units_per_plane;
  return (n * p.channels + c) * p.units_per_plane + (u - n * p.units_per_plane);
}

// Adds the run of units [first, first + ${run}) of channel c.
${runFunction("add_run", "add_unit", run, aligned)}
#if ${apply}
${grad ? backwardDataUnit(true, relu) : normalizeUnit(relu, residual)}
// Applies the elementwise step to the run of units [first, first + ${run}) of channel c.
${runFunction("apply_run", "do_unit", run, aligned)}
#endif

@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
#if ${gpu}
  // Grid (parts, channels): every invocation is a lane (lanes = parts · ${wg}).
  let c = wid.y;
  let lane = gid.x;
#elif ${whole}
  // One workgroup per channel.
  let c = wid.x + wid.y * nwg.x;
#else
  // Flat grid over channels · lanes.
  let g = flat_index(gid, nwg);
  if (g >= p.channels * p.lanes) { return; }
  let c = g / p.lanes;
  let lane = g - c * p.lanes;
#endif
#if ${grad}
  mean = stats[c].x;
  invstd = stats[c].y;
#if ${maskDy || apply}
  scale = invstd * gamma[c];
#endif
#if ${maskDy}
  shift = beta[c];
#endif
#elif ${!fromMoments}
  // K: the channel's first element (image 0, offset 0 of plane c).
  k = T(load_x(c * p.units_per_plane)${spec.vec4 ? ".x" : ""});
#endif
  sum1 = T(0.0);
  sum2 = T(0.0);
#if ${fromMoments}
  var merged = vec3<f32>(0.0);
  for (var j = lid; j < p.parts; j += ${wg}u) { merged = merge_moments(merged, moments[c * p.parts + j].xyz); }
  shared_moments[lid] = merged;
  workgroupBarrier();
  for (var stride = ${wg / 2}u; stride > 0u; stride = stride / 2u) {
    if (lid < stride) { shared_moments[lid] = merge_moments(shared_moments[lid], shared_moments[lid + stride]); }
    workgroupBarrier();
  }
  if (lid == 0u) {
    // As shifted sums with K = the mean: Σ(x − K) = 0, Σ(x − K)² = M2.
    let all = shared_moments[0];
    shared_sums[0] = finish_stats(c, vec2<f32>(0.0, all.z), all.y);
  }
#elif ${gpu}
  for (var u = lane; u < p.units_per_channel; u += p.lanes) { add_unit(unit_index(c, u)); }
#elif ${whole}
  for (var first = lid * ${run}u; first < p.units_per_channel; first += ${wg * run}u) { add_run(c, first); }
#else
  add_run(c, lane * ${run}u);
  partials[c * p.parts + lane] = vec2<f32>(hsum(sum1), hsum(sum2));
#endif
#if ${tree && !fromMoments}
  shared_sums[lid] = vec2<f32>(hsum(sum1), hsum(sum2));
  workgroupBarrier();
  for (var stride = ${wg / 2}u; stride > 0u; stride = stride / 2u) {
    if (lid < stride) { shared_sums[lid] += shared_sums[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let s = shared_sums[0];
#if ${!finalize}
    partials[c * p.parts + wid.x] = s;
#elif ${grad}
    ${apply ? "shared_sums[0] =" : "_ ="} finish_grad(c, s);
#else
    ${apply ? "shared_sums[0] =" : "_ ="} finish_stats(c, s, k${spec.vec4 ? ".x" : ""});
#endif
  }
#endif
#if ${apply}
  // Lane 0 left the channel's constants in shared_sums[0]: (mean, invstd) or coef.
  workgroupBarrier();
  let constants = shared_sums[0];
#if ${grad}
  mean_dy = constants.x;
  mean_dy_xhat = constants.y;
#else
  mean = constants.x;
  scale = constants.y * gamma[c];
  shift = beta[c];
#endif
  for (var first = lid * ${run}u; first < p.units_per_channel; first += ${wg * run}u) { apply_run(c, first); }
#endif
}`;
}

/**
 * Training forward, one invocation per channel: adds the channel's partial sums (in order),
 * saves stats[c] = (mean, 1/sqrt(var + eps)) with the biased variance, and updates the
 * running statistics in place (PyTorch): running = (1 − m)·running + m·batch, the running
 * variance from the unbiased variance var·M/(M−1).
 * Bindings: x (for the shift K), partials, stats, running_mean, running_var, params.
 * The running tensors are bound once, read_write (read + read_write of one buffer in one
 * dispatch is a validation error).
 */
export const batchStatsFinalizeShader = /* wgsl */ `
struct Params {
  channels: u32, parts: u32, plane: u32, count: f32,
  eps: f32, momentum: f32, unbias: f32,
}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> partials: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

${finishStats}

@compute @workgroup_size(${FINALIZE_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.channels) { return; }
  var s = vec2<f32>(0.0);
  for (var j = 0u; j < p.parts; j++) { s += partials[c * p.parts + j]; }
  _ = finish_stats(c, s, x[c * p.plane]);
}`;

/**
 * Eval mode, one invocation per channel: stats[c] = (running_mean, 1/sqrt(running_var + eps)).
 * A snapshot, so the backward uses the statistics the forward used.
 */
export const runningStatsShader = /* wgsl */ `
struct Params { channels: u32, eps: f32 }
@group(0) @binding(0) var<storage, read> running_mean: array<f32>;
@group(0) @binding(1) var<storage, read> running_var: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(${FINALIZE_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.channels) { return; }
  stats[c] = vec2<f32>(running_mean[c], inverseSqrt(running_var[c] + p.eps));
}`;

/**
 * How the streaming passes cut the units: each invocation handles a run of `run` consecutive
 * units (unrolled; on llvmpipe 4 vec4 units per invocation stream ~2x faster than one). When
 * `aligned`, the run divides a plane, so the whole run shares one channel and its constants
 * are loaded once; otherwise each unit finds its channel and checks the bound.
 */
export interface StreamSpec {
  vec4: boolean;
  run: number;
  aligned: boolean;
}

/** main() of a streaming pass: calls load_channel(c) and do_unit(u) for its run of units. */
function streamMain(spec: StreamSpec): string {
  return wgsl`
@compute @workgroup_size(${BN_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let first = flat_index(gid, nwg) * ${spec.run}u;
#if ${spec.aligned}
  if (first >= p.units) { return; }
  load_channel((first / p.units_per_plane) % p.channels);
  for (var j = 0u; j < ${spec.run}u; j++) { do_unit(first + j); }
#else
  for (var j = 0u; j < ${spec.run}u; j++) {
    let u = first + j;
    if (u < p.units) {
      load_channel((u / p.units_per_plane) % p.channels);
      do_unit(u);
    }
  }
#endif
}`;
}

/**
 * y = (x − mean)·(invstd·gamma) + beta per unit, optionally max(y, 0) (+ res before it).
 * Bindings: x, stats, gamma, beta, [res], y, params; x and res from operand textures when
 * `textures`.
 */
export const normalizeShader = memoizeShader(generateNormalizeShader);

function generateNormalizeShader(
  spec: StreamSpec,
  relu: boolean,
  residual = false,
  textures = false,
): string {
  let b = 0;
  const bind = (decl: string) => `@group(0) @binding(${b++}) ${decl};`;
  const x = readOperand("x", spec.vec4, textures), res = readOperand("res", spec.vec4, textures);
  const [stats, gamma, beta] = ["stats", "gamma", "beta"].map((name) => readOperand(name, false, textures));
  const bindings = [
    bind(x.decl),
    bind(stats.decl),
    bind(gamma.decl),
    bind(beta.decl),
    ...(residual ? [bind(res.decl)] : []),
    bind("var<storage, read_write> y: array<T>"),
    bind("var<uniform> p: Params"),
    x.loader,
    stats.loader,
    gamma.loader,
    beta.loader,
    ...(residual ? [res.loader] : []),
  ].join("\n");
  return wgsl`
${unitType(spec.vec4)}
${affine}
${flat(BN_WORKGROUP)}
struct Params { units: u32, units_per_plane: u32, channels: u32 }
${bindings}

var<private> mean: f32;
var<private> scale: f32;
var<private> shift: f32;

fn load_channel(c: u32) {
  mean = load_stats(2u * c);
  scale = load_stats(2u * c + 1u) * load_gamma(c);
  shift = load_beta(c);
}

${normalizeUnit(relu, residual)}
${streamMain(spec)}`;
}

/**
 * Backward finalize, one invocation per channel: dbeta = Σdy, dgamma = Σdy·x̂ (partials added
 * in order), and in training the two means the data gradient needs: coef[c] = (Σdy/M, Σdy·x̂/M).
 * Bindings: partials, dgamma, dbeta, [coef], params.
 */
export const batchNormBackwardFinalizeShader = memoizeShader(generateBatchNormBackwardFinalizeShader);

function generateBatchNormBackwardFinalizeShader(training: boolean): string {
  return wgsl`
struct Params { channels: u32, parts: u32, count: f32 }
@group(0) @binding(0) var<storage, read> partials: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbeta: array<f32>;
#if ${training}
@group(0) @binding(3) var<storage, read_write> coef: array<vec2<f32>>;
@group(0) @binding(4) var<uniform> p: Params;
#else
@group(0) @binding(3) var<uniform> p: Params;
#endif

${finishGrad(training)}

@compute @workgroup_size(${FINALIZE_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.channels) { return; }
  var s = vec2<f32>(0.0);
  for (var j = 0u; j < p.parts; j++) { s += partials[c * p.parts + j]; }
  _ = finish_grad(c, s);
}`;
}

/**
 * dx per unit. Training: gamma·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)); eval: gamma·invstd·dy
 * (the statistics are constants). With ReLU, dy is first masked by y > 0.
 * Bindings: [x], dy, stats, gamma, [beta], [coef], dx, params (x only when training or ReLU);
 * x and dy from operand textures when `textures`.
 */
export const batchNormBackwardDataShader = memoizeShader(generateBatchNormBackwardDataShader);

function generateBatchNormBackwardDataShader(
  spec: StreamSpec,
  training: boolean,
  relu: boolean,
  textures = false,
): string {
  const needsX = training || relu;
  let b = 0;
  const bind = (decl: string) => `@group(0) @binding(${b++}) ${decl};`;
  const x = readOperand("x", spec.vec4, textures), dy = readOperand("dy", spec.vec4, textures);
  const [stats, gamma, beta, coef] = ["stats", "gamma", "beta", "coef"].map((name) =>
    readOperand(name, false, textures)
  );
  const bindings = [
    ...(needsX ? [bind(x.decl)] : []),
    bind(dy.decl),
    bind(stats.decl),
    bind(gamma.decl),
    ...(relu ? [bind(beta.decl)] : []),
    ...(training ? [bind(coef.decl)] : []),
    bind("var<storage, read_write> dx: array<T>"),
    bind("var<uniform> p: Params"),
    ...(needsX ? [x.loader] : []),
    dy.loader,
    stats.loader,
    gamma.loader,
    ...(relu ? [beta.loader] : []),
    ...(training ? [coef.loader] : []),
  ].join("\n");
  return wgsl`
${unitType(spec.vec4)}
${affine}
${flat(BN_WORKGROUP)}
struct Params { units: u32, units_per_plane: u32, channels: u32 }
${bindings}

var<private> mean: f32;
var<private> invstd: f32;
var<private> scale: f32;
var<private> shift: f32;
var<private> mean_dy: f32;
var<private> mean_dy_xhat: f32;

fn load_channel(c: u32) {
  mean = load_stats(2u * c);
  invstd = load_stats(2u * c + 1u);
  scale = invstd * load_gamma(c);
#if ${relu}
  shift = load_beta(c);
#endif
#if ${training}
  mean_dy = load_coef(2u * c);
  mean_dy_xhat = load_coef(2u * c + 1u);
#endif
}

${backwardDataUnit(training, relu)}
${streamMain(spec)}`;
}
