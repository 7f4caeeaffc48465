/**
 * Filter gradient of conv2d, a reduction over every output position:
 *
 *   dw[co, ci, ky, kx] = sum over n, oy, ox of dy[n, co, oy, ox] * x[n, ci, oy*s - p + ky*d, ox*s - p + kx*d]
 *
 * It is a GEMM of dy (Cout x positions) with im2col(x)^T (positions x Cin*kh*kw). The long
 * reduction is split into chunks of positions that write partial sums to a scratch tensor;
 * `sumPartialsShader` then adds the chunks in a fixed order (deterministic: no float atomics).
 *
 * CPU variant (`filterGradientShader`): each invocation owns a register block of
 * coTile x ciTile x (kh*kw) weights and walks its chunk of output rows, pxStep columns at a
 * time: it loads dy for its channels and the x rows/columns the taps need (vec4 loads where
 * aligned; the blocks the previous step already loaded are carried over), then does
 * coTile*ciTile*taps*pxStep FMAs. On llvmpipe its speed is set by its loads: timing-only
 * variants without the dy loads ran 2.4x faster, without the x loads 1.5x (16x1 block,
 * before the carrying).
 * GPU variant: the tiled GEMM of conv2d_forward.ts with split-K over positions.
 */
import type { Tap } from "./conv2d_forward.ts";
import { CONV_TUNING, tiledGemmShader } from "./conv2d_forward.ts";
import { memoizeShader, operandTextureLoad } from "./common.ts";

export interface FilterGradSpec {
  coTile: number;
  ciTile: number;
  /** Output columns per inner step (a multiple of 4). */
  pxStep: number;
  strideY: number;
  strideX: number;
  /** Every tap in weight order (ky * kw + kx); row/col are ky*d - p and kx*d - p. */
  taps: readonly Tap[];
  /** x rows are 16-byte aligned (width % 4 == 0): load them as vec4. */
  vec4X: boolean;
  /** dy rows split into whole pxStep steps (width % pxStep == 0): load them as vec4. */
  vec4Dy: boolean;
  /**
   * Output rows walked together (1 or 2; the generic walk only): their dy and x values are
   * loaded in one step, and x rows both need are loaded once. The output height and every
   * split's row count are then multiples of it.
   */
  rowsPerStep?: number;
  /**
   * Short rows known when compiling (vec4X and vec4Dy only): the row is this many steps,
   * unrolled, and x rows are `inW` wide; splits are then whole images (see `imageLoops`).
   */
  row?: { steps: number; inW: number };
  /**
   * Read x and dy from operand textures (src/device/operand_textures.ts; rgba32float where they
   * are read as vec4, r32float otherwise) instead of storage buffers: texel fetches are gathers
   * on lavapipe, storage loads loops over the SIMD lanes.
   */
  textures: boolean;
}

/** WGSL reading element `index` of x (vec4 elements when vec4X) from its buffer or texture. */
const loadX = (s: FilterGradSpec, index: string) =>
  s.textures ? operandTextureLoad("x", index, s.vec4X) : `${s.vec4X ? "x4" : "x"}[${index}]`;
/** The same for dy (vec4 elements when vec4Dy). */
const loadDy = (s: FilterGradSpec, index: string) =>
  s.textures ? operandTextureLoad("dy", index, s.vec4Dy) : `${s.vec4Dy ? "dy4" : "dy"}[${index}]`;

const tag = (v: number) => (v < 0 ? `m${-v}` : `${v}`);
const distinct = (values: number[]) => [...new Set(values)].sort((a, b) => a - b);
const floorDiv = (a: number, b: number) => Math.floor(a / b);
const mod = (a: number, b: number) => ((a % b) + b) % b;

export const filterGradientShader = memoizeShader(generateFilterGradientShader);

function generateFilterGradientShader(s: FilterGradSpec): string {
  const WG = CONV_TUNING.filterWorkgroup;
  const T = s.taps.length;
  const loops = s.row ? imageLoops(s, s.row) : rowLoops(s);
  const out: string[] = [];
  const emit = (line: string) => out.push(line);

  const decls: string[] = [];
  for (let c = 0; c < s.coTile; c++) {
    for (let i = 0; i < s.ciTile; i++) {
      for (let k = 0; k < T; k++) decls.push(`var acc_${c}_${i}_${k} = 0.0;`);
    }
  }
  for (let c = 0; c < s.coTile; c++) {
    emit(`if (co0 + ${c}u < p.out_c) {`);
    for (let i = 0; i < s.ciTile; i++) {
      emit(`  if (ci0 + ${i}u < p.in_c) {`);
      emit(`    let base = ((split * p.out_c + co0 + ${c}u) * p.in_c + ci0 + ${i}u) * ${T}u;`);
      for (let k = 0; k < T; k++) emit(`    partial[base + ${k}u] = acc_${c}_${i}_${k};`);
      emit(`  }`);
    }
    emit(`}`);
  }
  const stores = out.splice(0).join("\n    ");

  return /* wgsl */ `
struct Params {
  batch: u32, in_c: u32, in_h: u32, in_w: u32,
  out_c: u32, out_h: u32, out_w: u32, co_blocks: u32,
  lanes: u32, rows_per_split: u32, total_rows: u32, invocations: u32,
}
@group(0) @binding(0) ${
    s.textures
      ? "var x: texture_2d<f32>"
      : `var<storage, read> ${s.vec4X ? "x4: array<vec4<f32>>" : "x: array<f32>"}`
  };
@group(0) @binding(1) ${
    s.textures
      ? "var dy: texture_2d<f32>"
      : `var<storage, read> ${s.vec4Dy ? "dy4: array<vec4<f32>>" : "dy: array<f32>"}`
  };
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// ${s.coTile} output channels x ${s.ciTile} input channels x ${T} taps per invocation.
@compute @workgroup_size(${WG})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  // One invocation per (channel block, split), flattened so that a SIMD group stays full
  // even when there are fewer channel blocks than lanes. Spare invocations compute a clamped
  // block and skip the stores (all lanes stay active).
  let flat = (wid.x + wid.y * groups.x) * ${WG}u + lid.x;
  let slot = min(flat, p.invocations - 1u);
  let lane = slot % p.lanes;
  let co0 = (lane % p.co_blocks) * ${s.coTile}u;
  let ci0 = (lane / p.co_blocks) * ${s.ciTile}u;
  let split = slot / p.lanes;
  let row_begin = split * p.rows_per_split;
  let row_end = min(p.total_rows, row_begin + p.rows_per_split);
  ${decls.join(" ")}
  ${loops}
  if (flat < p.invocations) {
    ${stores}
  }
}`;
}

/**
 * The general walk: the split's output rows one by one, each in steps of pxStep columns with
 * column bounds checked at run time.
 */
function rowLoops(s: FilterGradSpec): string {
  const K = s.rowsPerStep ?? 1;
  // x rows a step reads, as offsets from output row oy's first input row (oy * strideY): output
  // row oy + k reads k * strideY + tap.row. With two output rows per step (stride 1), four x
  // rows serve both instead of six.
  const xRow = (k: number, t: Tap) => k * s.strideY + t.row;
  const stepRows = Array.from({ length: K }, (_, k) => k);
  const rows = distinct(stepRows.flatMap((k) => s.taps.map((t) => xRow(k, t))));
  const cols = distinct(
    Array.from({ length: s.pxStep }, (_, j) => s.taps.map((t) => j * s.strideX + t.col)).flat(),
  );
  const blocks = distinct(cols.map((c) => floorDiv(c, 4)));
  // A step advances `advance` vec4 blocks along the x row, so block B of the next step is block
  // B + advance of this one: those blocks are carried over in registers, not loaded again (a
  // 3x3 stride-1 conv then loads 1 block per row and step instead of 3).
  const advance = (s.pxStep * s.strideX) / 4;
  const carried = s.vec4X && Number.isInteger(advance)
    ? blocks.filter((b) => blocks.includes(b + advance))
    : [];
  const loaded = blocks.filter((b) => !carried.includes(b));
  const out: string[] = [];
  const emit = (line: string) => out.push(line);

  // Per step of rows: where this invocation's dy rows and x rows start.
  for (let c = 0; c < s.coTile; c++) {
    for (const k of stepRows) {
      emit(
        `let dy_row_${c}_${k} = ((n * p.out_c + min(co0 + ${c}u, p.out_c - 1u)) * p.out_h + oy + ${k}u) * p.out_w;`,
      );
    }
  }
  for (const R of rows) {
    emit(`let iy_${tag(R)} = i32(oy * ${s.strideY}u) + ${R};`);
    emit(`let row_ok_${tag(R)} = iy_${tag(R)} >= 0 && iy_${tag(R)} < i32(p.in_h);`);
    emit(`let row_${tag(R)} = u32(clamp(iy_${tag(R)}, 0, i32(p.in_h) - 1)) * p.in_w;`);
  }
  for (let i = 0; i < s.ciTile; i++) {
    emit(`let plane_${i} = (n * p.in_c + min(ci0 + ${i}u, p.in_c - 1u)) * p.in_h * p.in_w;`);
  }
  // The carried blocks of the row's first step (ox = 0, so block B starts at column 4B).
  for (let i = 0; i < s.ciTile; i++) {
    for (const R of rows) {
      for (const B of carried) {
        const ok = `row_ok_${tag(R)} && ${4 * B} >= 0 && ${4 * B} < i32(p.in_w)`;
        const index = `(plane_${i} + row_${tag(R)} + u32(clamp(${4 * B}, 0, i32(p.in_w) - 4))) / 4u`;
        emit(`var xc_${i}_${tag(R)}_${tag(B)} = select(vec4<f32>(0.0), ${loadX(s, index)}, ${ok});`);
      }
    }
  }
  const perRow = out.splice(0).join("\n    ");

  // Per step of pxStep columns: load dy and x once ...
  for (let c = 0; c < s.coTile; c++) {
    for (const k of stepRows) {
      if (s.vec4Dy) {
        for (let b = 0; b < s.pxStep / 4; b++) {
          emit(`let dq_${c}_${k}_${b} = ${loadDy(s, `(dy_row_${c}_${k} + ox) / 4u + ${b}u`)};`);
        }
      } else {
        for (let j = 0; j < s.pxStep; j++) {
          emit(
            `let d_${c}_${k}_${j} = select(0.0, ${
              loadDy(s, `dy_row_${c}_${k} + min(ox + ${j}u, p.out_w - 1u)`)
            }, ox + ${j}u < p.out_w);`,
          );
        }
      }
    }
  }
  const dyValue = (c: number, k: number, j: number) =>
    s.vec4Dy ? `dq_${c}_${k}_${floorDiv(j, 4)}[${j % 4}]` : `d_${c}_${k}_${j}`;
  emit(`let ix0 = i32(ox * ${s.strideX}u);`);
  if (s.vec4X) {
    for (const B of loaded) {
      emit(`let col_ok_b${tag(B)} = ix0 + ${4 * B} >= 0 && ix0 + ${4 * B} < i32(p.in_w);`);
      emit(`let col_b${tag(B)} = u32(clamp(ix0 + ${4 * B}, 0, i32(p.in_w) - 4));`);
    }
  } else {
    for (const o of cols) {
      emit(`let col_ok_${tag(o)} = ix0 + ${o} >= 0 && ix0 + ${o} < i32(p.in_w);`);
      emit(`let col_${tag(o)} = u32(clamp(ix0 + ${o}, 0, i32(p.in_w) - 1));`);
    }
  }
  for (let i = 0; i < s.ciTile; i++) {
    for (const R of rows) {
      if (s.vec4X) {
        for (const B of carried) emit(`let xb_${i}_${tag(R)}_${tag(B)} = xc_${i}_${tag(R)}_${tag(B)};`);
        for (const B of loaded) {
          emit(
            `let xb_${i}_${tag(R)}_${tag(B)} = select(vec4<f32>(0.0), ${
              loadX(s, `(plane_${i} + row_${tag(R)} + col_b${tag(B)}) / 4u`)
            }, row_ok_${tag(R)} && col_ok_b${tag(B)});`,
          );
        }
      } else {
        for (const o of cols) {
          emit(
            `let xv_${i}_${tag(R)}_${tag(o)} = select(0.0, ${
              loadX(s, `plane_${i} + row_${tag(R)} + col_${tag(o)}`)
            }, row_ok_${tag(R)} && col_ok_${tag(o)});`,
          );
        }
      }
    }
  }
  const xValue = (i: number, R: number, o: number) =>
    s.vec4X ? `xb_${i}_${tag(R)}_${tag(floorDiv(o, 4))}[${mod(o, 4)}]` : `xv_${i}_${tag(R)}_${tag(o)}`;
  // ... then one FMA chain per accumulator over the step's rows and columns.
  for (let c = 0; c < s.coTile; c++) {
    for (let i = 0; i < s.ciTile; i++) {
      s.taps.forEach((t, tap) => {
        const acc = `acc_${c}_${i}_${tap}`;
        const terms = stepRows.flatMap((k) =>
          Array.from(
            { length: s.pxStep },
            (_, j) => `a = fma(${dyValue(c, k, j)}, ${xValue(i, xRow(k, t), j * s.strideX + t.col)}, a);`,
          )
        );
        emit(`{ var a = ${acc}; ${terms.join(" ")} ${acc} = a; }`);
      });
    }
  }
  // Carry the blocks the next step shares with this one.
  for (let i = 0; i < s.ciTile; i++) {
    for (const R of rows) {
      for (const B of carried) emit(`xc_${i}_${tag(R)}_${tag(B)} = xb_${i}_${tag(R)}_${tag(B + advance)};`);
    }
  }
  const perStep = out.splice(0).join("\n      ");
  return `for (var r = row_begin; r < row_end; r += ${K}u) {
    let n = r / p.out_h;
    let oy = r % p.out_h;
    ${perRow}
    for (var ox = 0u; ox < p.out_w; ox += ${s.pxStep}u) {
      ${perStep}
    }
  }`;
}

/**
 * Short rows (`row`): the split is whole images, walked image by image and row by row, each
 * row's `row.steps` steps unrolled. At step j, output column 4j + jj reads x column
 * (4j + jj)·strideX + tap.col, a constant: each x block of a row is loaded once, and blocks in
 * the padding are never loaded. Rows are carried down too: output row oy + 1 reads x rows
 * (oy + 1)·strideY + R, and those that row oy read already (R + strideY is a tap row) are kept
 * in registers, so a 3x3 stride-1 conv loads one x row per output row instead of three.
 */
function imageLoops(s: FilterGradSpec, row: NonNullable<FilterGradSpec["row"]>): string {
  const rows = distinct(s.taps.map((t) => t.row));
  const carried = rows.filter((R) => rows.includes(R + s.strideY));
  const fresh = rows.filter((R) => !carried.includes(R));
  const valid = (col: number) => col >= 0 && col < row.inW;
  const columns = (t: Tap) =>
    Array.from({ length: 4 * row.steps }, (_, px) => px * s.strideX + t.col).filter(valid);
  const blocks = distinct(s.taps.flatMap((t) => columns(t).map((col) => floorDiv(col, 4))));
  // Names of x block b of tap row R for input channel i: carried ones are vars.
  const name = (i: number, R: number, b: number) =>
    carried.includes(R) ? `xr_${i}_${tag(R)}_${b}` : `xa_${i}_${tag(R)}_${b}`;
  const load = (i: number, R: number, b: number) =>
    `select(vec4<f32>(0.0), ${loadX(s, `(plane_${i} + row_${tag(R)}) / 4u + ${b}u`)}, row_ok_${tag(R)})`;

  const perImage: string[] = [];
  for (let i = 0; i < s.ciTile; i++) {
    perImage.push(`let plane_${i} = (n * p.in_c + min(ci0 + ${i}u, p.in_c - 1u)) * p.in_h * p.in_w;`);
  }
  // The carried rows of output row 0 (x row R, where R < 0 is padding).
  for (const R of carried) {
    perImage.push(`let row_ok_${tag(R)} = ${R} >= 0 && ${R} < i32(p.in_h);`);
    perImage.push(`let row_${tag(R)} = u32(clamp(${R}, 0, i32(p.in_h) - 1)) * p.in_w;`);
    for (let i = 0; i < s.ciTile; i++) {
      for (const b of blocks) perImage.push(`var ${name(i, R, b)} = ${load(i, R, b)};`);
    }
  }

  const perRow: string[] = [];
  for (let c = 0; c < s.coTile; c++) {
    perRow.push(
      `let dy_row_${c} = ((n * p.out_c + min(co0 + ${c}u, p.out_c - 1u)) * p.out_h + oy) * p.out_w;`,
    );
  }
  for (const R of fresh) {
    perRow.push(`let iy_${tag(R)} = i32(oy * ${s.strideY}u) + ${R};`);
    perRow.push(`let row_ok_${tag(R)} = iy_${tag(R)} >= 0 && iy_${tag(R)} < i32(p.in_h);`);
    perRow.push(`let row_${tag(R)} = u32(clamp(iy_${tag(R)}, 0, i32(p.in_h) - 1)) * p.in_w;`);
  }
  const loaded = new Set<string>();
  const use = (i: number, R: number, b: number) => {
    const x = name(i, R, b);
    if (!carried.includes(R) && !loaded.has(x)) {
      loaded.add(x);
      perRow.push(`let ${x} = ${load(i, R, b)};`);
    }
    return x;
  };
  for (let j = 0; j < row.steps; j++) {
    for (let c = 0; c < s.coTile; c++) {
      perRow.push(`let dq_${c}_${j} = ${loadDy(s, `dy_row_${c} / 4u + ${j}u`)};`);
    }
    for (let c = 0; c < s.coTile; c++) {
      for (let i = 0; i < s.ciTile; i++) {
        s.taps.forEach((t, k) => {
          const terms: string[] = [];
          for (let jj = 0; jj < 4; jj++) {
            const col = (4 * j + jj) * s.strideX + t.col;
            if (!valid(col)) continue;
            terms.push(`a = fma(dq_${c}_${j}[${jj}], ${use(i, t.row, floorDiv(col, 4))}[${col % 4}], a);`);
          }
          if (terms.length === 0) return;
          perRow.push(`{ var a = acc_${c}_${i}_${k}; ${terms.join(" ")} acc_${c}_${i}_${k} = a; }`);
        });
      }
    }
  }
  // Carry down: row R of the next output row is row R + strideY of this one (ascending, so each
  // carried value is read before it is overwritten).
  for (const R of carried) {
    for (let i = 0; i < s.ciTile; i++) {
      for (const b of blocks) perRow.push(`${name(i, R, b)} = ${use(i, R + s.strideY, b)};`);
    }
  }
  return `for (var n = row_begin / p.out_h; n < row_end / p.out_h; n++) {
    ${perImage.join("\n    ")}
    for (var oy = 0u; oy < p.out_h; oy++) {
      ${perRow.join("\n      ")}
    }
  }`;
}

/** out[i] = sum over s of partial[s * len + i], in split order (deterministic). */
export const sumPartialsShader = /* wgsl */ `
struct Params { len: u32, splits: u32, groups_x: u32, _pad0: u32 }
@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * p.groups_x * 256u;
  if (i >= p.len) { return; }
  var total = 0.0;
  for (var s = 0u; s < p.splits; s++) { total += partial[s * p.len + i]; }
  out[i] = total;
}`;

/**
 * dw as a tiled GEMM with split-K: m = output channel, n = (ci, ky, kx), k = (image, oy, ox).
 * Split z writes partial[z][m][n]; `sumPartialsShader` adds the splits.
 */
export const backwardFilterGemmShader = tiledGemmShader({
  bindings: `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;`,
  paramsBinding: 3,
  functions: /* wgsl */ `
fn load_a(m: u32, k: u32) -> f32 {
  let pixels = p.out_h * p.out_w;
  return dy[((k / pixels) * p.out_c + m) * pixels + k % pixels];
}
fn load_b(k: u32, n: u32) -> f32 {
  let taps = p.kh * p.kw;
  let ci = n / taps;
  let ky = (n % taps) / p.kw;
  let kx = n % p.kw;
  let pixels = p.out_h * p.out_w;
  let b = k / pixels;
  let oy = (k % pixels) / p.out_w;
  let ox = k % p.out_w;
  let iy = i32(oy * p.stride_y + ky * p.dil_y) - p.pad_y;
  let ix = i32(ox * p.stride_x + kx * p.dil_x) - p.pad_x;
  if (iy < 0 || iy >= i32(p.in_h) || ix < 0 || ix >= i32(p.in_w)) { return 0.0; }
  return x[((b * p.in_c + ci) * p.in_h + u32(iy)) * p.in_w + u32(ix)];
}
fn store(m: u32, n: u32, split: u32, value: f32) {
  partial[(split * p.m + m) * p.n + n] = value;
}`,
});
