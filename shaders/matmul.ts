/**
 * Matrix multiplication kernels: C[b] = op(A[b]) · op(B[b]) (+ bias), op = identity or
 * transpose, for f32 row-major matrices. Transposes are read in the kernel (only the index
 * arithmetic changes), so no transposed copy is ever made; this is what makes the gradient
 * rules (dA = dC·Bᵀ, dB = Aᵀ·dC) free of extra passes.
 *
 * Two variants, chosen per adapter class:
 *
 * - "cpu" (llvmpipe/lavapipe): NO workgroup memory and no barriers. Each invocation computes
 *   a TM x TN block of C straight from storage: per step of k it loads TM values of A and TN
 *   values of B and does TM·TN multiply-adds (an outer product), so every load feeds TM or
 *   TN FMAs. On llvmpipe storage loads are per-lane scalar loops and barriers are coroutine
 *   switches, so this register blocking wins over shared-memory tiling; vec4 loads (4 floats
 *   per lane-iteration) are used along whichever axis of an operand is contiguous and
 *   4-aligned.
 * - "gpu": the classic tiled kernel. A 16x16 workgroup stages a 64 x 16 slab of A and a
 *   16 x 64 slab of B in workgroup memory (coalesced global loads, each element read once per
 *   workgroup), then each invocation accumulates a 4 x 4 register block from shared memory.
 *
 * Specialisations (each distinct spec is one cached pipeline):
 * - `exact`: M and N (and K for "gpu") are multiples of the workgroup's tile, so the bounds
 *   checks compile out; otherwise rows/columns are clamped on load (or zero-filled, "gpu")
 *   and guarded on store.
 * - `m4` / `n4` / `k4` ("cpu"): an operand whose contiguous axis is a multiple of 4 is bound
 *   as array<vec4<f32>>, and the k loop steps by 4 when K is.
 * - `largeBlock` ("cpu"): the 32x32 register block of big products (CPU_BLOCK).
 * - `bias`: adds bias[n] in the store (linear layers), no extra pass.
 *
 * A batch of matrices is the z dimension of the grid; matrix b starts at b * stride.
 */
import { wgsl } from "wgsl-preprocessor";
import { memoizeShader, operandTextureLoad, readOperand } from "./common.ts";

export type MatmulVariant = "cpu" | "gpu";

export interface MatmulSpec {
  variant: MatmulVariant;
  /** A is stored [K, M] and read transposed. */
  transposeA: boolean;
  /** B is stored [N, K] and read transposed. */
  transposeB: boolean;
  /** The grid covers C exactly: no clamps, no guarded stores. */
  exact: boolean;
  /** M, N, K are multiples of 4 ("cpu" only): vec4 loads/stores along those axes. */
  m4: boolean;
  n4: boolean;
  k4: boolean;
  /** Add bias[n] to every row of C. */
  bias: boolean;
  /**
   * "cpu" only: read A and B from operand textures (src/device/operand_textures.ts;
   * rgba32float when vectorised, else r32float) instead of storage buffers: texel fetches are
   * gathers on lavapipe, storage loads loops over the SIMD lanes.
   */
  textures?: boolean;
  /** "cpu" only: compute CPU_BLOCK.large per invocation instead of CPU_BLOCK.standard. */
  largeBlock?: boolean;
  /** "cpu" only: invocations per workgroup along the rows (1 to CPU_WORKGROUP.y; default the latter). */
  workgroupRows?: number;
}

/**
 * Register block of one "cpu" invocation: rows x cols outputs (rows and cols multiples of 4).
 * Measured on lavapipe (AMD EPYC Zen 3 VM, 2 cores, operand textures), A·B at 1024 in GFLOP/s,
 * variants alternated in one process: 8x16 (the previous choice) 14-19, 16x16 25-28, 32x32
 * 29-33, 32x64 31-33; 512: 17-18.5 / 24-26 / 27-30; Aᵀ·B 17 / 21 / 19.6; A·Bᵀ 16 / 23-24 / 28-30.
 * Bigger blocks load fewer operands per multiply-add (each k step: rows + cols loads for
 * rows·cols of them), and now that every accumulator's k chain is written in one piece (see
 * cpuShader) their spills cost less than those loads. The large block takes ~5 s to compile
 * (16x16: 0.7 s; 32x64: 20 s) and leaves fewer invocations, so only big products use it
 * (`matmulTunables.largeBlockMinSide`, src/ops/matmul.ts); Aᵀ·B does not gain from it.
 */
export const CPU_BLOCK = {
  standard: { rows: 16, cols: 16 },
  large: { rows: 32, cols: 32 },
};

/** The "cpu" register block for a spec. */
function cpuBlock(spec: Pick<MatmulSpec, "largeBlock">): { rows: number; cols: number } {
  return spec.largeBlock ? CPU_BLOCK.large : CPU_BLOCK.standard;
}
/**
 * Invocations per workgroup (x: columns, y: rows) of the "cpu" variant; products too small to
 * give every CPU worker a workgroup take fewer rows (`workgroupRows`, chosen in src/ops/matmul.ts).
 * x stays 8, one SIMD group: narrower workgroups halved the speed (measured).
 */
export const CPU_WORKGROUP = { x: 8, y: 8 } as const;

/** Which operands are bound as array<vec4<f32>>: those whose contiguous axis is 4-aligned. */
export function vectorised(spec: MatmulSpec): { a: boolean; b: boolean; c: boolean } {
  if (spec.variant === "gpu") return { a: false, b: false, c: false };
  return {
    // Aᵀ rows of a block load as vec4s: every CPU_BLOCK has a multiple of 4 rows.
    a: spec.transposeA ? spec.m4 : spec.k4,
    b: spec.transposeB ? spec.k4 : spec.n4,
    c: spec.n4,
  };
}

/** The "gpu" variant: 16x16 invocations x 4x4 outputs = a 64x64 tile; K staged 16 at a time. */
export const GPU_TILE = { rows: 64, cols: 64, depth: 16, threads: 16 } as const;

/** Rows x columns of C computed by one workgroup. */
export function matmulTile(
  spec: Pick<MatmulSpec, "variant" | "largeBlock" | "workgroupRows">,
): { rows: number; cols: number } {
  const block = cpuBlock(spec);
  return spec.variant === "cpu"
    ? { rows: block.rows * cpuWorkgroupRows(spec), cols: block.cols * CPU_WORKGROUP.x }
    : { rows: GPU_TILE.rows, cols: GPU_TILE.cols };
}

function cpuWorkgroupRows(spec: Pick<MatmulSpec, "workgroupRows">): number {
  return spec.workgroupRows ?? CPU_WORKGROUP.y;
}

/**
 * Uniform block shared by both variants. Strides are in elements of the binding's array type
 * (vec4 when the operand is vectorised).
 */
const PARAMS = /* wgsl */ `
struct Params {
  M: u32, N: u32, K: u32, _pad: u32,
  stride_a: u32, stride_b: u32, stride_c: u32, _pad2: u32,
}`;

function bindings(spec: MatmulSpec): string {
  const vec = vectorised(spec);
  const t = (v: boolean) => (v ? "vec4<f32>" : "f32");
  return wgsl`
@group(0) @binding(0) ${readOperand("A", vec.a, spec.textures ?? false).decl};
@group(0) @binding(1) ${readOperand("B", vec.b, spec.textures ?? false).decl};
#if ${spec.bias}
@group(0) @binding(2) var<storage, read> bias: array<${t(vec.c)}>;
@group(0) @binding(3) var<storage, read_write> C: array<${t(vec.c)}>;
@group(0) @binding(4) var<uniform> p: Params;
#else
@group(0) @binding(2) var<storage, read_write> C: array<${t(vec.c)}>;
@group(0) @binding(3) var<uniform> p: Params;
#endif
`;
}

export const matmulShader = memoizeShader(generateMatmulShader);

function generateMatmulShader(spec: MatmulSpec): string {
  return spec.variant === "cpu" ? cpuShader(spec) : gpuShader(spec);
}

// ---------------------------------------------------------------------------------------------
// "cpu" variant: register blocking straight from storage.

const range = (n: number) => [...Array(n).keys()];

function cpuShader(spec: MatmulSpec): string {
  const { rows: TM, cols: TN } = cpuBlock(spec), G = TN / 4;
  const KS = spec.k4 ? 4 : 1; // k values per loop iteration
  const vec = vectorised(spec);
  const lines: string[] = [];
  const emit = (s: string) => lines.push(s);
  // Element `index` of A or B (vec4 elements where vectorised), from storage or a texture.
  const A = (index: string) => spec.textures ? operandTextureLoad("A", index, vec.a) : `A[${index}]`;
  const B = (index: string) => spec.textures ? operandTextureLoad("B", index, vec.b) : `B[${index}]`;

  // Loads for one step of the k loop: a(i, kk) is the scalar A value of block row i at depth
  // k + kk, b(kk, g) the vec4 of B values at depth k + kk for block columns 4g..4g+3.
  let a: (i: number, kk: number) => string;
  let b: (kk: number, g: number) => string;
  const quad = (f: (c: number) => string) => `vec4<f32>(${range(4).map(f).join(", ")})`;
  if (!spec.transposeA && vec.a) {
    // A[m, k..k+3] is one vec4 per row (vectorised only when K % 4 == 0).
    for (const i of range(TM)) emit(`let a${i} = ${A(`a_row${i} + k / 4u`)};`);
    a = (i, kk) => `a${i}[${kk}]`;
  } else if (!spec.transposeA) {
    for (const i of range(TM)) emit(`let a${i} = ${A(`a_row${i} + k`)};`);
    a = (i) => `a${i}`;
  } else if (vec.a) {
    // Aᵀ: A is [K, M]; A[k, m..m+3] covers four rows of the block at once.
    for (const kk of range(KS)) {
      for (const g of range(TM / 4)) emit(`let a${kk}_${g} = ${A(`(k + ${kk}u) * M4 + a_col4_${g}`)};`);
    }
    a = (i, kk) => `a${kk}_${Math.floor(i / 4)}[${i % 4}]`;
  } else {
    for (const kk of range(KS)) {
      for (const i of range(TM)) emit(`let a${kk}_${i} = ${A(`(k + ${kk}u) * p.M + a_col${i}`)};`);
    }
    a = (i, kk) => `a${kk}_${i}`;
  }
  if (!spec.transposeB && vec.b) {
    // B[k, n..n+3] is one vec4: exactly the four columns one accumulator needs.
    for (const kk of range(KS)) {
      for (const g of range(G)) emit(`let b${kk}_${g} = ${B(`(k + ${kk}u) * N4 + b_col4_${g}`)};`);
    }
    b = (kk, g) => `b${kk}_${g}`;
  } else if (!spec.transposeB) {
    for (const kk of range(KS)) {
      for (const j of range(TN)) emit(`let b${kk}_${j} = ${B(`(k + ${kk}u) * p.N + b_col${j}`)};`);
    }
    b = (kk, g) => quad((c) => `b${kk}_${4 * g + c}`);
  } else if (vec.b) {
    // Bᵀ: B is [N, K]; B[n, k..k+3] is one vec4 per column (vectorised only when K % 4 == 0).
    for (const j of range(TN)) emit(`let b${j} = ${B(`b_row${j} + k / 4u`)};`);
    b = (kk, g) => quad((c) => `b${4 * g + c}[${kk}]`);
  } else {
    for (const j of range(TN)) emit(`let b${j} = ${B(`b_row${j} + k`)};`);
    b = (_, g) => quad((c) => `b${4 * g + c}`);
  }
  // Outer products: acc[i][g] (a vec4 of 4 columns) += a(i, kk) * b(kk, g), each accumulator's
  // KS steps in one statement group: the accumulator is loaded into a register once, takes its
  // KS multiply-adds and is stored back. Emitted step by step instead (kk outermost), every
  // multiply-add reloaded and re-stored its spilled accumulator: 16x16 blocks ran ~1.5x slower
  // (16.6 against 25-27 GFLOP/s at 1024), 8x16 ~1.2x.
  for (const g of range(G)) {
    for (const i of range(TM)) {
      const chain = range(KS).map((kk) => `c = fma(vec4<f32>(${a(i, kk)}), ${b(kk, g)}, c);`);
      emit(`{ var c = acc${i}_${g}; ${chain.join(" ")} acc${i}_${g} = c; }`);
    }
  }
  const body = lines.join("\n    ");

  // Per-invocation set-up: first element of each row of A (or column of Aᵀ) and of B.
  const setup: string[] = [];
  const clampRow = (e: string) => (spec.exact ? `(${e})` : `min(${e}, p.M - 1u)`);
  const clampCol = (e: string) => (spec.exact ? `(${e})` : `min(${e}, p.N - 1u)`);
  const clampRow4 = (e: string) => (spec.exact ? `(${e})` : `min(${e}, M4 - 1u)`);
  const clampCol4 = (e: string) => (spec.exact ? `(${e})` : `min(${e}, N4 - 1u)`);
  const kLen = vec.a && !spec.transposeA ? "K4" : "p.K";
  for (const i of range(TM)) {
    if (!spec.transposeA) setup.push(`let a_row${i} = a_base + ${clampRow(`row0 + ${i}u`)} * ${kLen};`);
    else if (!vec.a) setup.push(`let a_col${i} = a_base + ${clampRow(`row0 + ${i}u`)};`);
  }
  if (spec.transposeA && vec.a) {
    for (const g of range(TM / 4)) {
      setup.push(`let a_col4_${g} = a_base + ${clampRow4(`row0 / 4u + ${g}u`)};`);
    }
  }
  const bLen = vec.b && spec.transposeB ? "K4" : "p.K";
  for (const j of range(TN)) {
    if (spec.transposeB) setup.push(`let b_row${j} = b_base + ${clampCol(`col0 + ${j}u`)} * ${bLen};`);
    else if (!vec.b) setup.push(`let b_col${j} = b_base + ${clampCol(`col0 + ${j}u`)};`);
  }
  if (!spec.transposeB && vec.b) {
    for (const g of range(G)) setup.push(`let b_col4_${g} = b_base + ${clampCol4(`col0 / 4u + ${g}u`)};`);
  }

  // Stores, with the bias added, guarded when the grid overhangs C.
  const stores: string[] = [];
  if (vec.c) {
    for (const g of range(G)) {
      stores.push(`let c4_${g} = col0 / 4u + ${g}u;`);
      if (spec.bias) {
        stores.push(`let bias${g} = bias[${spec.exact ? `c4_${g}` : `min(c4_${g}, N4 - 1u)`}];`);
      }
    }
    for (const i of range(TM)) {
      for (const g of range(G)) {
        const value = spec.bias ? `acc${i}_${g} + bias${g}` : `acc${i}_${g}`;
        const store = `C[c_base + (row0 + ${i}u) * N4 + c4_${g}] = ${value};`;
        stores.push(spec.exact ? store : `if (row0 + ${i}u < p.M && c4_${g} < N4) { ${store} }`);
      }
    }
  } else {
    for (const j of range(TN)) {
      if (spec.bias) stores.push(`let bias${j} = bias[${clampCol(`col0 + ${j}u`)}];`);
    }
    for (const i of range(TM)) {
      for (const j of range(TN)) {
        const acc = `acc${i}_${Math.floor(j / 4)}[${j % 4}]`;
        const value = spec.bias ? `${acc} + bias${j}` : acc;
        const store = `C[c_base + (row0 + ${i}u) * p.N + col0 + ${j}u] = ${value};`;
        stores.push(spec.exact ? store : `if (row0 + ${i}u < p.M && col0 + ${j}u < p.N) { ${store} }`);
      }
    }
  }
  const accs = range(TM).flatMap((i) => range(G).map((g) => `var acc${i}_${g} = vec4<f32>(0.0);`));

  return wgsl`
${PARAMS}
${bindings(spec)}

// Invocation (x, y, z) computes rows row0..row0+${TM - 1}, columns col0..col0+${TN - 1} of C[z].
@compute @workgroup_size(${CPU_WORKGROUP.x}, ${cpuWorkgroupRows(spec)}, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * ${TM}u;
  let col0 = gid.x * ${TN}u;
#if ${!spec.exact}
  if (row0 >= p.M || col0 >= p.N) { return; }
#endif
  let M4 = p.M / 4u;
  let N4 = p.N / 4u;
  let K4 = p.K / 4u;
  let a_base = gid.z * p.stride_a;
  let b_base = gid.z * p.stride_b;
  let c_base = gid.z * p.stride_c;
  ${setup.join("\n  ")}
  ${accs.join("\n  ")}
  for (var k = 0u; k < p.K; k += ${KS}u) {
    ${body}
  }
  ${stores.join("\n  ")}
}`;
}

// ---------------------------------------------------------------------------------------------
// "gpu" variant: classic workgroup-memory tiling with a 4x4 register block per invocation.

function gpuShader(spec: MatmulSpec): string {
  const { rows: TM, cols: TN, depth: TK, threads: T } = GPU_TILE;
  const loadsA = (TM * TK) / (T * T), loadsB = (TN * TK) / (T * T);
  // Operands are bound as scalar arrays here: each invocation loads single elements, and
  // neighbouring invocations load neighbouring addresses (coalesced).
  const readA = "A[ia]", readB = "B[ib]";
  // Element e of the A slab: row m (0..TM) and depth kk (0..TK), laid out so that consecutive
  // invocations read consecutive addresses of the stored matrix.
  const aCoords = spec.transposeA
    ? `let kk = e / ${TM}u; let m = e % ${TM}u;`
    : `let m = e / ${TK}u; let kk = e % ${TK}u;`;
  const aIndex = spec.transposeA ? "(k0 + kk) * p.M + tile_row + m" : "(tile_row + m) * p.K + k0 + kk";
  const bCoords = spec.transposeB
    ? `let n = e / ${TK}u; let kk = e % ${TK}u;`
    : `let kk = e / ${TN}u; let n = e % ${TN}u;`;
  const bIndex = spec.transposeB ? "(tile_col + n) * p.K + k0 + kk" : "(k0 + kk) * p.N + tile_col + n";
  const aInside = "tile_row + m < p.M && k0 + kk < p.K";
  const bInside = "tile_col + n < p.N && k0 + kk < p.K";
  // Register block R x R: acc_i is a vec4 holding columns tx + T·j, j = 0..3, of row ty + T·i.
  const R = TM / T;
  const accs = range(R).map((i) => `var acc${i} = vec4<f32>(0.0);`).join("\n  ");
  const bRow = `vec4<f32>(${range(R).map((j) => `tileB[kk * ${TN}u + lid.x + ${j * T}u]`).join(", ")})`;
  const fmas = range(R).map((i) =>
    `acc${i} = fma(vec4<f32>(tileA[kk * ${TM}u + lid.y + ${i * T}u]), b, acc${i});`
  ).join("\n      ");
  const stores = range(R).flatMap((i) =>
    range(R).map((j) => {
      const value = spec.bias ? `acc${i}[${j}] + bias[col${j}]` : `acc${i}[${j}]`;
      const store = `C[c_base + row${i} * p.N + col${j}] = ${value};`;
      return spec.exact ? store : `if (row${i} < p.M && col${j} < p.N) { ${store} }`;
    })
  ).join("\n  ");
  const coords = [
    ...range(R).map((i) => `let row${i} = tile_row + lid.y + ${i * T}u;`),
    ...range(R).map((j) => `let col${j} = tile_col + lid.x + ${j * T}u;`),
  ].join("\n  ");

  return wgsl`
${PARAMS}
${bindings(spec)}

var<workgroup> tileA: array<f32, ${TK * TM}>; // [kk][m]
var<workgroup> tileB: array<f32, ${TK * TN}>; // [kk][n]

// Invocation (tx, ty) computes rows tile_row + ty + ${T}i and columns tile_col + tx + ${T}j, i, j < ${R}
// (strided, so that neighbouring invocations store neighbouring columns).
@compute @workgroup_size(${T}, ${T}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let tile_row = wid.y * ${TM}u;
  let tile_col = wid.x * ${TN}u;
  let a_base = wid.z * p.stride_a;
  let b_base = wid.z * p.stride_b;
  let c_base = wid.z * p.stride_c;
  ${accs}
  for (var k0 = 0u; k0 < p.K; k0 += ${TK}u) {
    for (var q = 0u; q < ${loadsA}u; q++) {
      let e = t + q * ${T * T}u;
      ${aCoords}
#if ${spec.exact}
      let ia = a_base + ${aIndex};
      tileA[kk * ${TM}u + m] = ${readA};
#else
      let inside = ${aInside};
      let ia = select(0u, a_base + ${aIndex}, inside);
      tileA[kk * ${TM}u + m] = select(0.0, ${readA}, inside);
#endif
    }
    for (var q = 0u; q < ${loadsB}u; q++) {
      let e = t + q * ${T * T}u;
      ${bCoords}
#if ${spec.exact}
      let ib = b_base + ${bIndex};
      tileB[kk * ${TN}u + n] = ${readB};
#else
      let inside = ${bInside};
      let ib = select(0u, b_base + ${bIndex}, inside);
      tileB[kk * ${TN}u + n] = select(0.0, ${readB}, inside);
#endif
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${TK}u; kk++) {
      let b = ${bRow};
      ${fmas}
    }
    workgroupBarrier();
  }
  ${coords}
  ${stores}
}`;
}
