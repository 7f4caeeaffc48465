/** WGSL snippets shared by many kernels. */

/** Invocations per workgroup of the one-dimensional (elementwise) kernels. */
export const WORKGROUP_1D = 256;

/**
 * Flat element index for kernels dispatched on a 2-D grid of 1-D workgroups: WebGPU caps each
 * grid dimension at 65,535 workgroups, so large tensors spill into the y dimension.
 */
export const flatIndex = /* wgsl */ `
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * ${WORKGROUP_1D}u;
}`;

/**
 * Texels per row of an operand texture (src/device/operand_textures.ts): a power of two, so a
 * linear index splits into texture coordinates by a mask and a shift.
 */
export const OPERAND_TEXTURE_WIDTH = 4096;

/**
 * WGSL expression reading element `index` (a u32 expression) of an operand texture `name`
 * holding a buffer row-major, OPERAND_TEXTURE_WIDTH texels a row: the vec4 at `index` of an
 * rgba32float texture, or the f32 of an r32float one.
 */
export function operandTextureLoad(name: string, index: string, vec4: boolean): string {
  const shift = Math.log2(OPERAND_TEXTURE_WIDTH);
  const load = `textureLoad(${name}, vec2<u32>((${index}) & ${
    OPERAND_TEXTURE_WIDTH - 1
  }u, (${index}) >> ${shift}u), 0)`;
  return vec4 ? load : `${load}.x`;
}

/**
 * A read-only f32 operand `name` of a kernel (vec4 elements when `vec4`): its binding
 * declaration (without `@group/@binding`) and `fn load_<name>(u)`, the element at index u, from a
 * storage buffer or, when `texture`, from an operand texture (`operandTextureLoad`).
 */
export function readOperand(name: string, vec4: boolean, texture: boolean): { decl: string; loader: string } {
  const T = vec4 ? "vec4<f32>" : "f32";
  return {
    decl: texture ? `var ${name}: texture_2d<f32>` : `var<storage, read> ${name}: array<${T}>`,
    loader: `fn load_${name}(u: u32) -> ${T} { return ${
      texture ? operandTextureLoad(name, "u", vec4) : `${name}[u]`
    }; }`,
  };
}

/**
 * WGSL `is_nan(v)`, by the bits: compilers may fold v != v to false (they assume no NaNs), and
 * WGSL's min/max may return either operand when one is NaN.
 */
export const isNanWgsl = /* wgsl */ `
fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}`;

/**
 * WGSL `keep_nan(v, r)`: r, or v where v is NaN. Wraps max/min/clamp so that a NaN input comes
 * out NaN, as in PyTorch (relu(NaN) = NaN), instead of being hidden by an operand WGSL may pick.
 */
export const keepNanWgsl = /* wgsl */ `${isNanWgsl}
fn keep_nan(v: f32, r: f32) -> f32 { return select(r, v, is_nan(v)); }`;

/** WGSL `max_nan(a, b)`, `min_nan(a, b)` (with keep_nan): NaN if either is, as PyTorch's. */
export const extremumNanWgsl = /* wgsl */ `${keepNanWgsl}
fn max_nan(a: f32, b: f32) -> f32 { return keep_nan(a, keep_nan(b, max(a, b))); }
fn min_nan(a: f32, b: f32) -> f32 { return keep_nan(a, keep_nan(b, min(a, b))); }`;

/**
 * Memoises a shader generator by its arguments (JSON). Kernels are dispatched thousands of
 * times per epoch with a handful of distinct specialisations, so a 30 KB conv source is built
 * once, not on every dispatch, and the same string object comes back, whose hash V8 keeps for
 * the pipeline-cache lookup. A switch that changes the source must be an argument: one read
 * inside the generator (an environment variable, a global) is seen only on the first call.
 */
export function memoizeShader<Args extends unknown[]>(
  generate: (...args: Args) => string,
): (...args: Args) => string {
  const sources = new Map<string, string>();
  return (...args: Args): string => {
    const key = JSON.stringify(args);
    let source = sources.get(key);
    if (source === undefined) {
      source = generate(...args);
      sources.set(key, source);
    }
    return source;
  };
}

/**
 * mul_hi(a, b): the high 32 bits of the 64-bit product, from 16-bit halves (WGSL has no u64).
 * Philox and `fastDivision` include it; a shader takes one of them, or this alone.
 */
export const mulHi = /* wgsl */ `
fn mul_hi(a: u32, b: u32) -> u32 {
  let a0 = a & 0xffffu;
  let a1 = a >> 16u;
  let b0 = b & 0xffffu;
  let b1 = b >> 16u;
  let cross0 = a0 * b1;
  let cross1 = a1 * b0;
  let carry = ((a0 * b0) >> 16u) + (cross0 & 0xffffu) + (cross1 & 0xffffu);
  return a1 * b1 + (cross0 >> 16u) + (cross1 >> 16u) + (carry >> 16u);
}`;

/**
 * Exact unsigned division by a divisor known only at run time, as a multiply by a precomputed
 * "magic" reciprocal (Granlund & Montgomery). On llvmpipe `a / d` with a non-constant d is
 * done lane by lane with the scalar divide (~1 ns per lane, as much as a storage load); this is
 * a handful of vector integer operations. Valid for a < 2^31 (every tensor index here).
 *
 * `div_magic(a, magic)` takes the pair from `divisionMagic(d)`: m = ceil(2^k / d) with
 * k = 31 + ceil(log2 d), so floor(a / d) = floor(a · m / 2^k) = mul_hi(a, m) >> (k − 32).
 * d = 1 is flagged by m = 0 (its m would be 2^31 with k = 31, a shift of −1).
 */
export const fastDivision = /* wgsl */ `
${mulHi}
// floor(a / d) for a < 2^31, with magic = divisionMagic(d).
fn div_magic(a: u32, magic: vec2<u32>) -> u32 {
  return select(mul_hi(a, magic.x) >> magic.y, a, magic.x == 0u);
}`;

/** The [m, shift] pair `div_magic` divides by `d` with (see `fastDivision`). */
export function divisionMagic(d: number): [number, number] {
  if (!Number.isInteger(d) || d < 1 || d > 0x7fffffff) {
    throw new RangeError(`divisionMagic: divisor must be an integer in [1, 2^31), got ${d}`);
  }
  if (d === 1) return [0, 0];
  const log2 = Math.ceil(Math.log2(d));
  const k = 31n + BigInt(log2);
  const m = ((1n << k) + BigInt(d) - 1n) / BigInt(d);
  return [Number(m), Number(k - 32n)];
}
