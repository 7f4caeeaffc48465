/**
 * Convolution kernels shared by the forward pass and the data gradient, in two variants:
 *
 * - `directConvShader` (CPU adapters, llvmpipe): a direct convolution, register-blocked. Each
 *   invocation computes a tile of `coTile` output channels x `pyTile` rows x `pxTile` columns
 *   and loops over input channels. Per input channel it loads the few input rows/columns the
 *   tile needs once (vec4 loads when rows are 16-byte aligned) and reuses every value for all
 *   taps and output channels that touch it. Why, measured on llvmpipe: a storage load compiles
 *   to a scalar loop over the 8 SIMD lanes (a vec4 load costs about two scalar ones), a uniform
 *   load to one vector gather (~3x cheaper), an FMA to one instruction; so the kernel
 *   maximises FMAs per storage load, and the weights come from a uniform buffer, packed by
 *   `packWeightsShader` into chunks of at most 64 KiB. Result: ~45 GFLOP/s on 2 cores for a
 *   64->64 3x3 conv, vs ~20 for im2col + matmul. Where `xTexture`, x is read from an operand
 *   texture (src/device/operand_textures.ts) instead: a texel fetch is a gather, and on an AMD
 *   Zen 3 VM 1.6-1.9x faster here than the storage loads, whose per-lane loop stalls there.
 *   The tap list is a specialisation: the forward pass uses every (ky, kx); the data gradient
 *   of a strided conv has one "phase" per output residue class, each with the taps that reach
 *   it, and computes them all in one pass (a tile holds pixels of every phase) or one pass per
 *   phase.
 *
 * - `tiledGemmShader` (real GPUs): an implicit GEMM with 64x64 workgroup-memory tiles, whose
 *   operands are gathered by index functions (im2col computed inside the tile load). The
 *   forward pass, the data gradient and the filter gradient are three index mappings of it.
 */
import { memoizeShader, operandTextureLoad, readOperand } from "./common.ts";

/** Every tunable of the conv kernels in one place. */
export const CONV_TUNING = {
  /**
   * Invocations per workgroup of the direct (CPU) conv kernel: one 8-lane SIMD group, so small
   * grids still spread over every core (measured: as fast as 64 on big layers).
   */
  directWorkgroup: 8,
  /**
   * Direct conv: rows of 20-28 columns take one whole-row tile from this many output pixels per
   * output channel (see conv2d.ts runDirect). Below it they share the 16-column tile's shaders:
   * each tile shape is another ~20 s shader compile on lavapipe, which a small conv never pays
   * back (a cold test run took 4.5 minutes longer when every 28-wide conv of the tests compiled
   * its own).
   */
  wholeRowMinPixels: 32768,
  /** Invocations per workgroup of the direct (CPU) filter-gradient kernel. */
  filterWorkgroup: 8,
  /**
   * Filter gradient: output positions summed sequentially by one invocation before the partial
   * sums of the splits are added (bounds f32 rounding error growth on long reductions).
   */
  filterPositionsPerSplit: 8192,
  /**
   * Filter gradient: output rows up to this wide (and 4-aligned) are unrolled with constant
   * columns and x rows carried down (shaders/conv2d_backward_filter.ts `imageLoops`). Paired
   * A/B against the generic loop on lavapipe: ResNet-8's 8x8 layer 1.45-1.9x, its 16 -> 8
   * stride-2 layer 1.15-1.33x; 16-wide rows (4 unrolled steps) were 0.89-0.95x, so they stay
   * on the generic loop.
   */
  filterUnrolledRow: 8,
  /**
   * Filter gradient: 3x3 (or smaller) kernels on carried rows wider than `filterUnrolledRow`,
   * strided or with 64+ input channels, take 16x4 channel blocks (576 accumulators) instead of
   * 8x4 from this many output positions (batch x out_h x out_w). Paired in one process on
   * lavapipe: 64->64 @32x32 b64 1.05-1.16x, ResNet-8's 16->32 stride-2 layer (16,384 positions)
   * 1.10-1.23x; its stride-1 16->16 @32 and 32->32 @16 unchanged (so they keep 8x4). Each such
   * shader takes 4-11 s to compile instead of 2-3.5, which small convs (the tests) never pay back.
   */
  filterWideBlockMinPositions: 16384,
  /** Floats in one uniform binding (64 KiB, the WebGPU maximum and lavapipe's). */
  uniformFloats: 16384,
  /** Tiled GEMM (GPU variant): output tile and K step; 16x16 threads, 4x4 outputs each. */
  gemmTileM: 64,
  gemmTileN: 64,
  gemmTileK: 16,
};

/** One tap of a direct convolution: where it reads (relative to the tile) and which weight. */
export interface Tap {
  /** Input row offset, added to `outputRow * strideY` (padding already included). */
  row: number;
  /** Input column offset, added to `outputColumn * strideX`. */
  col: number;
  /** Index of the tap's weight among the kernel's kh*kw taps (ky * kw + kx). */
  weight: number;
}

export interface DirectConvSpec {
  /** Output channels per invocation (4, 8 or 16: vec4 accumulators). */
  coTile: number;
  /** Output columns per invocation (a multiple of 4). */
  pxTile: number;
  /** Output rows per invocation. */
  pyTile: number;
  /** Input step per output row / column of one phase (the conv stride; 1 for data gradients). */
  strideY: number;
  strideX: number;
  /**
   * Output phases: tile pixel (r, j) belongs to phase (r % phasesY, j % phasesX) and reads the
   * input from row floor(r / phasesY) * strideY + tap.row (columns alike). 1 x 1 for the
   * forward pass and a single data-gradient phase; the conv stride for a strided conv's data
   * gradient in one pass (pyTile and pxTile are then multiples of it).
   */
  phasesY: number;
  phasesX: number;
  /** The taps of each phase, at index (r % phasesY) * phasesX + j % phasesX. */
  taps: readonly (readonly Tap[])[];
  /** Taps per input channel in the packed weights (kh * kw). */
  tapCount: number;
  /** Load input rows as vec4 (the input width is a multiple of 4). */
  vec4: boolean;
  /**
   * Store output rows as vec4: the grid covers whole output rows (step 1, offset 0) and the
   * width is a multiple of 4. A storage store compiles to a loop over the SIMD lanes, like a
   * load, and one vec4 store replaces four scalar ones. Measured on lavapipe: forward passes
   * of the ResNet-8 layers 5-30 % faster (most where few input channels share each tile).
   */
  vec4Store: boolean;
  /**
   * Read x from an operand texture (src/device/operand_textures.ts: rgba32float when `vec4`,
   * r32float otherwise) instead of a storage buffer: a texel fetch is a gather on lavapipe, a
   * storage load a loop over the SIMD lanes.
   */
  xTexture: boolean;
  bias: boolean;
  /**
   * Whether the stores add to what y holds: compiled in ("never", "always") where every dispatch
   * of the conv does the same, read from p.accumulate ("param") where the weights take several
   * input-channel chunks (the first chunk overwrites, the rest add). A storage load under a
   * uniform branch that is never taken still costs lavapipe a masked pass over the lanes: compiled
   * out, ResNet-8's 16 -> 16 @32x32 forward ran 1.05-1.07x and its 3 -> 16 stem 1.1-1.3x faster
   * (paired replays).
   */
  accumulate: "never" | "always" | "param";
  /**
   * "always" with vec4 stores: read what y holds from an operand texture of it (a copy made before
   * the dispatch) instead of from y. Streaming 4 MB through lavapipe measured 3.5 ms of storage
   * loads against ~0.6 of texel fetches plus a 0.8 ms copy (the per-lane load loop again). Data
   * gradients added in place, in one process, 6 alternating pairs: ResNet-8's 16 -> 16 @32x32
   * median 0.85x the time, its 1x1 stride-2 shortcuts 0.59x and 0.74x.
   */
  addendTexture?: boolean;
  /**
   * Also write each tile's moments per output channel: (count, mean, M2 = Σ(v − mean)², 0)
   * over the values it stores, into `moments[channel * tile_count + tile]`, when p.write_moments
   * is set (the last input-channel chunk, whose stores are final). A batchnorm that follows
   * merges them (Chan et al.) instead of reading the conv output once more for its statistics.
   * Forward passes only (one phase, every tap).
   */
  moments?: boolean;
}

/**
 * Uniform block of the direct kernel. Output positions are a grid `q_h x q_w` placed in the
 * output tensor at (q * out_step + out_off): the identity for the forward pass, one residue
 * class per phase for the data gradient of a strided conv.
 */
const directParams = /* wgsl */ `
struct Params {
  tiles_x: u32, tiles_y: u32, tile_count: u32, groups_x: u32,
  in_channels: u32, ci_start: u32, ci_count: u32, in_h: u32,
  in_w: u32, out_channels: u32, co_start: u32, co_count: u32,
  q_h: u32, q_w: u32, out_h: u32, out_w: u32,
  out_step_y: u32, out_step_x: u32, out_off_y: u32, out_off_x: u32,
  // vec4s per (input channel, tap) row of the packed weights; 1: add to the existing output
  chunk_vec4: u32, accumulate: u32, write_moments: u32, _pad1: u32,
}`;

/** Sorted distinct values. */
function distinct(values: number[]): number[] {
  return [...new Set(values)].sort((a, b) => a - b);
}

const floorDiv = (a: number, b: number) => Math.floor(a / b);
const mod = (a: number, b: number) => ((a % b) + b) % b;
/** WGSL name fragment for a possibly negative offset. */
const tag = (v: number) => (v < 0 ? `m${-v}` : `${v}`);

export const directConvShader = memoizeShader(generateDirectConvShader);

/** The taps of tile pixel (r, j) as input offsets from the tile's input origin (iy0, ix0). */
function pixelTaps(s: DirectConvSpec, r: number, j: number): Tap[] {
  const phase = s.taps[(r % s.phasesY) * s.phasesX + (j % s.phasesX)];
  const offY = floorDiv(r, s.phasesY) * s.strideY, offX = floorDiv(j, s.phasesX) * s.strideX;
  return phase.map((t) => ({ row: offY + t.row, col: offX + t.col, weight: t.weight }));
}

function generateDirectConvShader(s: DirectConvSpec): string {
  const WG = CONV_TUNING.directWorkgroup;
  const V = s.coTile / 4;
  const pixels = Array.from({ length: s.pyTile * s.pxTile }, (_, i) => [floorDiv(i, s.pxTile), i % s.pxTile]);
  const allTaps = pixels.flatMap(([r, j]) => pixelTaps(s, r, j));
  const rows = distinct(allTaps.map((t) => t.row));
  const cols = distinct(allTaps.map((t) => t.col));
  const blocks = distinct(cols.map((c) => floorDiv(c, 4)));
  const tapTotal = s.taps.flat().length;
  const lines: string[] = [];
  const emit = (line: string) => lines.push(line);
  // The input origin of a tile: its output origin, divided into phases, times the stride.
  const origin = (q: string, phases: number, stride: number) =>
    phases === 1 ? `${q} * ${stride}u` : `${q} / ${phases}u * ${stride}u`;

  // Per tile (outside the channel loop): which input rows and columns exist, and where.
  emit(`let iy0 = i32(${origin("qy0", s.phasesY, s.strideY)});`);
  emit(`let ix0 = i32(${origin("qx0", s.phasesX, s.strideX)});`);
  for (const R of rows) {
    emit(`let iy_${tag(R)} = iy0 + ${R};`);
    emit(`let row_ok_${tag(R)} = iy_${tag(R)} >= 0 && iy_${tag(R)} < i32(p.in_h);`);
    emit(`let row_${tag(R)} = u32(clamp(iy_${tag(R)}, 0, i32(p.in_h) - 1)) * p.in_w;`);
  }
  if (s.vec4) {
    for (const B of blocks) {
      emit(`let ixb_${tag(B)} = ix0 + ${4 * B};`);
      emit(`let col_ok_b${tag(B)} = ixb_${tag(B)} >= 0 && ixb_${tag(B)} < i32(p.in_w);`);
      emit(`let col_b${tag(B)} = u32(clamp(ixb_${tag(B)}, 0, i32(p.in_w) - 4));`);
    }
  } else {
    for (const c of cols) {
      emit(`let ix_${tag(c)} = ix0 + ${c};`);
      emit(`let col_ok_${tag(c)} = ix_${tag(c)} >= 0 && ix_${tag(c)} < i32(p.in_w);`);
      emit(`let col_${tag(c)} = u32(clamp(ix_${tag(c)}, 0, i32(p.in_w) - 1));`);
    }
  }
  const setup = lines.splice(0).join("\n  ");

  const loadX = (index: string) => s.xTexture ? operandTextureLoad("x", index, s.vec4) : `x[${index}]`;
  // Inside the channel loop: load every needed input value once ...
  for (const R of rows) {
    if (s.vec4) {
      for (const B of blocks) {
        const index = `(plane + row_${tag(R)} + col_b${tag(B)}) / 4u`;
        const ok = `row_ok_${tag(R)} && col_ok_b${tag(B)}`;
        emit(`let xb_${tag(R)}_${tag(B)} = select(vec4<f32>(0.0), ${loadX(index)}, ${ok});`);
      }
    } else {
      for (const c of cols) {
        emit(
          `let xv_${tag(R)}_${tag(c)} = select(0.0, ${loadX(`plane + row_${tag(R)} + col_${tag(c)}`)}, ` +
            `row_ok_${tag(R)} && col_ok_${tag(c)});`,
        );
      }
    }
  }
  const xValue = (R: number, c: number) =>
    s.vec4 ? `xb_${tag(R)}_${tag(floorDiv(c, 4))}[${mod(c, 4)}]` : `xv_${tag(R)}_${tag(c)}`;
  // ... then, per accumulator, one chain of FMAs over the taps (fewer register spills than
  // sweeping every accumulator once per tap).
  const weightIndex = (t: Tap, v: number) => `w_${t.weight} + ${v}u`;
  for (const t of distinct(s.taps.flat().map((t) => t.weight))) {
    emit(`let w_${t} = wrow + ${t}u * p.chunk_vec4;`);
  }
  for (let r = 0; r < s.pyTile; r++) {
    for (let v = 0; v < V; v++) {
      for (let j = 0; j < s.pxTile; j++) {
        const acc = `acc_${r}_${j}_${v}`;
        const terms = pixelTaps(s, r, j).map((t) =>
          `a = fma(weights[${weightIndex(t, v)}], vec4<f32>(${xValue(t.row, t.col)}), a);`
        );
        if (terms.length) emit(`{ var a = ${acc}; ${terms.join(" ")} ${acc} = a; }`);
      }
    }
  }
  // A phase that no tap reaches only writes zeros; it still must use every binding.
  if (tapTotal === 0) emit(`_ = ${loadX("0u")}; _ = weights[wrow];`);
  const body = lines.splice(0).join("\n    ");

  const decls: string[] = [];
  for (let r = 0; r < s.pyTile; r++) {
    for (let j = 0; j < s.pxTile; j++) {
      for (let v = 0; v < V; v++) decls.push(`var acc_${r}_${j}_${v} = vec4<f32>(0.0);`);
    }
  }

  // Stores: one per accumulator component, skipping positions outside the grid.
  for (let r = 0; r < s.pyTile; r++) {
    emit(`let qy_${r} = qy0 + ${r}u;`);
    emit(`let y_row_${r} = (qy_${r} * p.out_step_y + p.out_off_y) * p.out_w;`);
  }
  for (let j = 0; j < s.pxTile; j++) emit(`let qx_${j} = qx0 + ${j}u;`);
  // Moments: sums of v − K with K the tile's first value (shifted sums: no cancellation when
  // the mean is large against the spread), turned into (count, mean, M2) at the end.
  const width = s.vec4Store ? 4 : 1;
  const V4 = s.vec4Store ? "vec4<f32>" : "f32";
  const momentSum = (v: string) => (s.vec4Store ? `(${v}.x + ${v}.y + ${v}.z + ${v}.w)` : v);
  for (let v = 0; v < V; v++) {
    for (let c = 0; c < 4; c++) {
      const co = `co_${v * 4 + c}`;
      emit(`let ${co} = co0 + ${v * 4 + c}u;`);
      emit(`if (${co} < p.co_count) {`);
      emit(`  let plane_out = (n * p.out_channels + p.co_start + ${co}) * p.out_h * p.out_w;`);
      // The bias is added once: by the chunk that overwrites.
      const bias = {
        never: `bias[p.co_start + ${co}]`,
        always: "0.0",
        param: `select(bias[p.co_start + ${co}], 0.0, p.accumulate != 0u)`,
      };
      emit(`  let b = ${s.bias ? bias[s.accumulate] : "0.0"};`);
      if (s.moments) emit(`  var m_k = 0.0; var m_n = 0.0; var m_s1 = ${V4}(0.0); var m_s2 = ${V4}(0.0);`);
      // vec4 stores cover whole rows: a block of 4 columns is inside the grid or past its width.
      for (let r = 0; r < s.pyTile; r++) {
        for (let j = 0; j < s.pxTile; j += width) {
          const lanes = Array.from({ length: width }, (_, k) => `acc_${r}_${j + k}_${v}[${c}]`).join(", ");
          // Pixels no tap reaches (a strided 1x1 conv's data gradient: 3 phases of 4) add
          // nothing: when accumulating, their load and store are skipped.
          const reached = Array.from({ length: width }, (_, k) => pixelTaps(s, r, j + k).length > 0);
          if (!reached.includes(true) && s.accumulate === "always") continue;
          const skip = reached.includes(true) || s.accumulate === "never" ? "" : " && p.accumulate == 0u";
          emit(`  if (qy_${r} < p.q_h && qx_${j} < p.q_w${skip}) {`);
          emit(
            s.vec4Store
              ? `    let o = (plane_out + y_row_${r} + qx_${j}) / 4u;`
              : `    let o = plane_out + y_row_${r} + qx_${j} * p.out_step_x + p.out_off_x;`,
          );
          emit(`    var value = ${s.vec4Store ? `vec4<f32>(${lanes})` : lanes} + b;`);
          if (s.accumulate === "always") {
            emit(`    value += ${s.addendTexture ? operandTextureLoad("y_in", "o", true) : "y[o]"};`);
          }
          if (s.accumulate === "param") emit(`    if (p.accumulate != 0u) { value += y[o]; }`);
          emit(`    y[o] = value;`);
          if (s.moments) {
            // The tile's first position is always inside the grid (spare tiles store nothing).
            if (r === 0 && j === 0) emit(`    m_k = value${s.vec4Store ? ".x" : ""};`);
            emit(`    let m_d = value - ${V4}(m_k); m_s1 += m_d; m_s2 += m_d * m_d; m_n += ${width}.0;`);
          }
          emit(`  }`);
        }
      }
      if (s.moments) {
        // Written by the last input-channel chunk, whose stores are final: every dispatch of a
        // conv in one chunk.
        emit(s.accumulate === "param" ? "  if (p.write_moments != 0u) {" : "  {");
        emit(`    let s1 = ${momentSum("m_s1")};`);
        emit(`    let s2 = ${momentSum("m_s2")};`);
        emit(
          `    moments[(p.co_start + ${co}) * p.tile_count + flat] = ` +
            `vec4<f32>(m_n, m_k + s1 / m_n, max(s2 - s1 * s1 / m_n, 0.0), 0.0);`,
        );
        emit(`  }`);
      }
      emit(`}`);
    }
  }
  const stores = lines.splice(0).join("\n    ");

  // Bindings 4, 5, ... in this order, those the spec asks for.
  const optionalBindings = [
    s.bias ? "var<storage, read> bias: array<f32>;" : "",
    s.moments ? "var<storage, read_write> moments: array<vec4<f32>>;" : "",
    s.addendTexture ? "var y_in: texture_2d<f32>;" : "",
  ].filter((d) => d !== "").map((d, i) => `@group(0) @binding(${4 + i}) ${d}`);
  return /* wgsl */ `
${directParams}
@group(0) @binding(0) ${readOperand("x", s.vec4, s.xTexture).decl};
@group(0) @binding(1) var<uniform> weights: array<vec4<f32>, ${CONV_TUNING.uniformFloats / 4}>;
@group(0) @binding(2) var<storage, read_write> y: array<${s.vec4Store ? "vec4<f32>" : "f32"}>;
@group(0) @binding(3) var<uniform> p: Params;
${optionalBindings.join("\n")}

// Tile of ${s.coTile} channels x ${s.pyTile} rows x ${s.pxTile} columns per invocation, ${tapTotal} taps.
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let flat = (wid.x + wid.y * p.groups_x) * ${WG}u + lid.x;
  // Spare invocations compute a clamped tile and skip the stores (all lanes stay active).
  let tile = min(flat, p.tile_count - 1u);
  let qx0 = (tile % p.tiles_x) * ${s.pxTile}u;
  let qy0 = ((tile / p.tiles_x) % p.tiles_y) * ${s.pyTile}u;
  let n = tile / (p.tiles_x * p.tiles_y);
  let co0 = wid.z * ${s.coTile}u;
  ${setup}
  ${decls.join(" ")}
  var plane = (n * p.in_channels + p.ci_start) * p.in_h * p.in_w;
  for (var ci = 0u; ci < p.ci_count; ci++) {
    let wrow = ci * ${s.tapCount}u * p.chunk_vec4 + wid.z * ${V}u;
    ${body}
    plane += p.in_h * p.in_w;
  }
  if (flat < p.tile_count) {
    ${stores}
  }
}`;
}

/**
 * Packs conv weights into uniform-buffer chunks for the direct kernel, whose input channels
 * are `a` and output channels `b`: forward a = Cin, b = Cout; data gradient a = Cout, b = Cin
 * (`transposed`); w is [Cout, Cin, T], T = kh*kw taps. Chunk (bc, ac) holds
 * a in [ac*ciChunk, ...) x all taps x b in [bc*coChunk, ...) as
 * packed[(a_local * T + t) * coChunk + b_local], zero-padded past a_count / b_count; chunks
 * start every `chunk_stride` floats, a multiple of the uniform binding offset alignment.
 * The chunk shape is compiled in, so the index math divides by constants (an integer division
 * by a runtime value is a slow scalar loop on llvmpipe), and only the chunk's
 * ciChunk*T*coChunk floats are written: the kernel never reads the rest of its 64 KiB window.
 */
export interface PackSpec {
  taps: number;
  ciChunk: number;
  coChunk: number;
  transposed: boolean;
}

/**
 * One dispatch writes every layout in `specs` (the forward one, and the data gradient's when the
 * backward will need it: one dispatch less per conv and step). Bindings: w, packed_0, ...,
 * params. Grid: x = position within a chunk, y = ac, z = the chunks (bc) of layout 0, then
 * those of layout 1.
 */
export const packWeightsShader = memoizeShader((specs: PackSpec[]) => {
  const layouts = specs.map((s, k) => /* wgsl */ `
fn pack_${k}(within: u32, ac: u32, bc: u32) {
  if (within >= ${s.ciChunk * s.taps * s.coChunk}u || ac >= p.layouts[${k}].y) { return; }
  let rest = within / ${s.coChunk}u;
  let b = bc * ${s.coChunk}u + within % ${s.coChunk}u;
  let t = rest % ${s.taps}u;
  let a = ac * ${s.ciChunk}u + rest / ${s.taps}u;
  var value = 0.0;
  if (a < ${s.transposed ? "p.cout" : "p.cin"} && b < ${s.transposed ? "p.cin" : "p.cout"}) {
    value = w[${s.transposed ? "(a * p.cin + b)" : "(b * p.cin + a)"} * ${s.taps}u + t];
  }
  packed_${k}[(bc * p.layouts[${k}].y + ac) * p.layouts[${k}].x + within] = value;
}`);
  const bindings = specs.map((_, k) =>
    `@group(0) @binding(${k + 1}) var<storage, read_write> packed_${k}: array<f32>;`
  );
  return /* wgsl */ `
// Per layout: (chunk_stride, a_chunks, b_chunks, 0).
struct Params { cout: u32, cin: u32, _pad0: u32, _pad1: u32, layouts: array<vec4<u32>, ${specs.length}> }
@group(0) @binding(0) var<storage, read> w: array<f32>;
${bindings.join("\n")}
@group(0) @binding(${specs.length + 1}) var<uniform> p: Params;
${layouts.join("\n")}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${
    specs.length === 1
      ? "pack_0(gid.x, gid.y, gid.z);"
      : "if (gid.z < p.layouts[0].z) { pack_0(gid.x, gid.y, gid.z); } else { pack_1(gid.x, gid.y, gid.z - p.layouts[0].z); }"
  }
}`;
});

/**
 * Uniform block shared by the tiled-GEMM conv kernels (GPU variant): the conv geometry and
 * the GEMM sizes. `x` is the conv input [batch, in_c, in_h, in_w], `y` its output
 * [batch, out_c, out_h, out_w], the kernel is kh x kw.
 */
export const gemmParams = /* wgsl */ `
struct Params {
  batch: u32, in_c: u32, in_h: u32, in_w: u32,
  out_c: u32, out_h: u32, out_w: u32, kh: u32,
  kw: u32, stride_y: u32, stride_x: u32, dil_y: u32,
  dil_x: u32, pad_y: i32, pad_x: i32, _pad0: u32,
  m: u32, n: u32, k: u32, k_split: u32,
  // Grid: x = column tiles (past the per-dimension limit they continue in z), y = row tiles,
  // z = split * column_groups.
  groups_x: u32, splits: u32, _pad1: u32, _pad2: u32,
}`;

export interface TiledGemmSpec {
  /** Storage bindings 0..count-1 (declarations). */
  bindings: string;
  /** Binding index of the `Params` uniform block (after the storage bindings). */
  paramsBinding: number;
  /**
   * WGSL functions `load_a(m, k) -> f32`, `load_b(k, n) -> f32` (0 outside the operands)
   * and `store(m, n, split, value)`, called only for m < p.m, n < p.n.
   */
  functions: string;
}

/**
 * C[m, n] = sum_k A[m, k] * B[k, n] over the K range of one split
 * ([split * k_split, (split + 1) * k_split)). Classic shared-memory tiling: each 16x16 workgroup
 * stages a TMxTK slice of A and a TKxTN slice of B, then each thread accumulates 4x4 outputs.
 */
export function tiledGemmShader(s: TiledGemmSpec): string {
  const { gemmTileM: TM, gemmTileN: TN, gemmTileK: TK } = CONV_TUNING;
  return /* wgsl */ `
${gemmParams}
${s.bindings}
@group(0) @binding(${s.paramsBinding}) var<uniform> p: Params;
${s.functions}

var<workgroup> tile_a: array<array<f32, ${TM}>, ${TK}>;
var<workgroup> tile_b: array<array<f32, ${TN}>, ${TK}>;

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let m0 = wid.y * ${TM}u;
  let n0 = (wid.x + (wid.z / p.splits) * p.groups_x) * ${TN}u;
  let split = wid.z % p.splits;
  let k_begin = split * p.k_split;
  let k_end = min(p.k, k_begin + p.k_split);
  let thread = lid.y * 16u + lid.x;
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = k_begin; k0 < k_end; k0 += ${TK}u) {
    for (var i = 0u; i < ${(TM * TK) / 256}u; i++) {
      let e = thread + i * 256u;
      let kk = e % ${TK}u;
      let mm = e / ${TK}u;
      var a = 0.0;
      if (m0 + mm < p.m && k0 + kk < k_end) { a = load_a(m0 + mm, k0 + kk); }
      tile_a[kk][mm] = a;
    }
    for (var i = 0u; i < ${(TN * TK) / 256}u; i++) {
      let e = thread + i * 256u;
      let nn = e % ${TN}u;
      let kk = e / ${TN}u;
      var b = 0.0;
      if (n0 + nn < p.n && k0 + kk < k_end) { b = load_b(k0 + kk, n0 + nn); }
      tile_b[kk][nn] = b;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${TK}u; kk++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        av[i] = tile_a[kk][lid.y * 4u + i];
        bv[i] = tile_b[kk][lid.x * 4u + i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i][j] = fma(av[i], bv[j], acc[i][j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      let m = m0 + lid.y * 4u + i;
      let n = n0 + lid.x * 4u + j;
      if (m < p.m && n < p.n) { store(m, n, split, acc[i][j]); }
    }
  }
}`;
}

/** Forward pass as a tiled GEMM: m = output channel, n = (image, oy, ox), k = (ci, ky, kx). */
export function forwardGemmShader(bias: boolean): string {
  return tiledGemmShader({
    bindings: `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${bias ? "@group(0) @binding(4) var<storage, read> bias: array<f32>;" : ""}`,
    paramsBinding: 3,
    functions: /* wgsl */ `
fn load_a(m: u32, k: u32) -> f32 { return w[m * p.k + k]; }
fn load_b(k: u32, n: u32) -> f32 {
  let taps = p.kh * p.kw;
  let ci = k / taps;
  let ky = (k % taps) / p.kw;
  let kx = k % p.kw;
  let pixels = p.out_h * p.out_w;
  let b = n / pixels;
  let oy = (n % pixels) / p.out_w;
  let ox = n % p.out_w;
  let iy = i32(oy * p.stride_y + ky * p.dil_y) - p.pad_y;
  let ix = i32(ox * p.stride_x + kx * p.dil_x) - p.pad_x;
  if (iy < 0 || iy >= i32(p.in_h) || ix < 0 || ix >= i32(p.in_w)) { return 0.0; }
  return x[((b * p.in_c + ci) * p.in_h + u32(iy)) * p.in_w + u32(ix)];
}
fn store(m: u32, n: u32, split: u32, value: f32) {
  let pixels = p.out_h * p.out_w;
  y[((n / pixels) * p.out_c + m) * pixels + n % pixels] = value${bias ? " + bias[m]" : ""};
}`,
  });
}
