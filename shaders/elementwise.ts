/**
 * One generic elementwise kernel: out[i] = EXPR(a, b, c, s0, s1), for up to three inputs, with
 * NumPy broadcasting.
 *
 * The op first collapses the shapes (src/ops/elementwise.ts `collapseDims`): size-1 dimensions
 * go, and neighbours every input steps over as one merge, so same-shape inputs become rank 1 and
 * x − mean with x [64, 3, 32, 32], mean [1, 3, 1, 1] becomes rank 3: [64, 3, 1024]. The rank is
 * part of the source, so the index math is unrolled: the output index is split into coordinates
 * (innermost first, each a division by a magic reciprocal, `fastDivision`: the integer divide
 * costs as much as a storage load on llvmpipe), and each input's offset is the dot product of
 * the coordinates with its strides (0 where broadcast). Rank 1 needs no division at all.
 *
 * `vec4`: when the innermost dimension is a multiple of 4, each invocation computes four
 * neighbouring outputs; an input contiguous along that dimension is read as one vec4, one
 * broadcast along it as one float for all four. On llvmpipe a storage access compiles to a loop
 * over the SIMD lanes whatever its width, so this moves a tensor with a quarter of the accesses
 * (measured ~2x faster on large same-shape tensors, 4x on a per-channel broadcast).
 *
 * `run`: each invocation then takes 4 consecutive units along the innermost dimension, so the
 * index math runs once per 4 units and an input broadcast along that dimension (a per-channel
 * constant) is loaded once for all of them.
 *
 * `textures`: the inputs are read from operand textures (src/device/operand_textures.ts), CPU
 * adapters only: there a texel fetch is a gather, a storage load a loop over the SIMD lanes.
 */
import { fastDivision, flatIndex, memoizeShader, readOperand, WORKGROUP_1D } from "./common.ts";

/** Units per invocation when the innermost dimension divides into runs (see `ElementwiseSpec.run`). */
export const ELEMENTWISE_RUN = 4;

/** Largest rank the kernel supports. */
export const MAX_RANK = 8;

export interface ElementwiseSpec {
  /** WGSL expression over inputs `a`, `b`, `c` (f32) and scalars `s0`, `s1`. */
  expr: string;
  inputs: 1 | 2 | 3;
  /** Rank of the collapsed output shape (1 for same-shape inputs). */
  rank: number;
  /**
   * Four outputs per invocation (the innermost dimension a multiple of 4): inputs with inner
   * stride 1 are read as one vec4, those with 0 as one float for all four. Shapes and strides
   * then count vec4s for the contiguous inputs.
   */
  vec4: boolean;
  /**
   * Per input, its stride along the innermost dimension when that is 0 or 1 (compiled in: a
   * same-shape input reads at the output index with no uniform load), or -1 (read from the
   * uniform block). In vec4s for contiguous inputs of the vec4 form.
   */
  innerStride: number[];
  /**
   * Outputs (or vec4s) per invocation, consecutive along the innermost dimension, which it
   * divides: the index math runs once per run, and an input broadcast along that dimension is
   * loaded once for the run. On llvmpipe a run of 4 streams faster than one unit per invocation
   * (fewer invocations, each with its own index math, bounds check and broadcast loads;
   * measurements in src/ops/elementwise.ts).
   */
  run: number;
  /**
   * Read every input from an operand texture (rgba32float for the vec4 inputs, r32float for the
   * others) instead of a storage buffer. On an AMD Zen 3 VM's lavapipe a storage vec4 load cost
   * 12.8 ns per invocation, a texel fetch 0.8 (bench/load_costs.ts).
   */
  textures?: boolean;
  /** Extra WGSL functions the expression calls. */
  helpers?: string;
}

const NAMES = ["a", "b", "c"];

export const elementwiseShader = memoizeShader(generateElementwiseShader);

function generateElementwiseShader(spec: ElementwiseSpec): string {
  const names = NAMES.slice(0, spec.inputs);
  const vec4 = spec.vec4;
  const isVec = (input: number) => vec4 && spec.innerStride[input] === 1;
  const operands = names.map((name, i) => readOperand(`in_${name}`, isVec(i), spec.textures ?? false));
  const bindings = operands.map((o, i) => `@group(0) @binding(${i}) ${o.decl};`).join("\n");
  const at = (d: number) => `[${Math.floor(d / 4)}][${d % 4}]`;
  const stride = (input: number, d: number) =>
    `p.in_strides[${input * (MAX_RANK / 4) + Math.floor(d / 4)}][${d % 4}]`;
  // at += coordinate · stride, with the innermost stride compiled in where it is 0 or 1.
  const term = (name: string, input: number, d: number, coord: string) => {
    const known = d === spec.rank - 1 ? spec.innerStride[input] : -1;
    if (known === 0) return [];
    return [`at_${name} += ${known === 1 ? coord : `${coord} * ${stride(input, d)}`};`];
  };
  // The index math of the run's first unit; unit u of the run is u innermost steps further.
  const lines: string[] = [`var rest = first;`, ...names.map((name) => `var at_${name} = 0u;`)];
  for (let d = spec.rank - 1; d > 0; d--) {
    lines.push(`{`);
    lines.push(`  let q = div_magic(rest, p.magic[${Math.floor(d / 2)}].${d % 2 === 0 ? "xy" : "zw"});`);
    lines.push(`  let coord = rest - q * p.out_shape${at(d)};`);
    names.forEach((name, input) => lines.push(...term(name, input, d, "coord").map((l) => `  ${l}`)));
    lines.push(`  rest = q;`, `}`);
  }
  // The outermost coordinate is what is left: no division.
  names.forEach((name, input) => lines.push(...term(name, input, 0, "rest")));
  // Loads: inputs broadcast along the innermost dimension once per run, the others per unit.
  const step = (input: number) => {
    const known = spec.innerStride[input];
    return known === 1 ? "unit" : `unit * ${stride(input, spec.rank - 1)}`;
  };
  const hoisted = names.filter((_, input) => spec.innerStride[input] === 0)
    .map((name) => `let ${name} = load_in_${name}(at_${name});`);
  const perUnit = names.map((name, input) =>
    spec.innerStride[input] === 0 ? "" : `let ${name} = load_in_${name}(at_${name} + ${step(input)});`
  ).filter((l) => l);
  const component = (c: string) =>
    `apply(${names.map((n, input) => isVec(input) ? `${n}.${c}` : n).join(", ")}, s0, s1)`;
  const value = vec4
    ? `vec4<f32>(${["x", "y", "z", "w"].map(component).join(", ")})`
    : `apply(${names.join(", ")}, s0, s1)`;
  return /* wgsl */ `
${flatIndex}
${spec.rank > 1 ? fastDivision : ""}
${spec.helpers ?? ""}
struct Params {
  n: u32, rank: u32, s0: f32, s1: f32,
  // Output shape, 4 dims per vec4; the magic pair of each dim's size, 2 dims per vec4;
  // each input's strides (0 where broadcast).
  out_shape: array<vec4<u32>, ${MAX_RANK / 4}>,
  magic: array<vec4<u32>, ${MAX_RANK / 2}>,
  in_strides: array<vec4<u32>, ${(MAX_RANK / 4) * spec.inputs}>,
}
${bindings}
${operands.map((o) => o.loader).join("\n")}
@group(0) @binding(${spec.inputs}) var<storage, read_write> out: array<${vec4 ? "vec4<f32>" : "f32"}>;
@group(0) @binding(${spec.inputs + 1}) var<uniform> p: Params;

fn apply(${names.map((n) => `${n}: f32`).join(", ")}, s0: f32, s1: f32) -> f32 {
  return ${spec.expr};
}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let s0 = p.s0;
  let s1 = p.s1;
  let first = flat_index(gid, nwg) * ${spec.run}u;
  if (first >= p.n) { return; }
  ${lines.join("\n  ")}
  ${hoisted.join("\n  ")}
  for (var unit = 0u; unit < ${spec.run}u; unit++) {
    let i = first + unit;
    if (i >= p.n) { return; }
    ${perUnit.join("\n    ")}
    out[i] = ${value};
  }
}`;
}
