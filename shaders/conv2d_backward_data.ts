/**
 * Data gradient of conv2d (a transposed convolution):
 *
 *   dx[n, ci, iy, ix] = sum over co, ky, kx of w[co, ci, ky, kx] * dy[n, co, oy, ox]
 *   where iy = oy * s - p + ky * d, i.e. oy = (iy + p - ky * d) / s when that divides exactly.
 *
 * CPU variant: split dx into s_y x s_x "phases" (iy = qy * s + ry). Within one phase the taps
 * that reach it are fixed and oy = qy + (ry + p - ky * d) / s, so each phase is a plain
 * stride-1 correlation of dy with a subset of the taps, run by the direct kernel of
 * conv2d_forward.ts (weights packed transposed: dy's channels are its inputs). When the stride
 * divides the kernel's tiles (1, 2, 4) one pass computes every phase: a tile of dx holds pixels
 * of all phases, each with its own taps, and they share the dy values they load; other strides
 * run one pass per phase. For stride 1 there is one phase with every tap: a forward conv with
 * the flipped kernel.
 *
 * GPU variant: the same sum as an implicit GEMM (m = ci, n = (image, iy, ix), k = (co, ky, kx)),
 * where the B operand reads dy at the (oy, ox) above or 0 when s does not divide.
 */
import type { Tap } from "./conv2d_forward.ts";
import { tiledGemmShader } from "./conv2d_forward.ts";

export interface Phase {
  /** Residue of the dx row / column this phase writes (iy = qy * strideY + ry). */
  ry: number;
  rx: number;
  /** Taps reaching this phase; `row`/`col` are offsets into dy: oy = qy + row. */
  taps: Tap[];
}

export interface ConvGeometry {
  kh: number;
  kw: number;
  strideY: number;
  strideX: number;
  padY: number;
  padX: number;
  dilY: number;
  dilX: number;
}

/** The phases of the data gradient and, for each, the taps that reach it. */
export function dataGradientPhases(g: ConvGeometry): Phase[] {
  const phases: Phase[] = [];
  for (let ry = 0; ry < g.strideY; ry++) {
    for (let rx = 0; rx < g.strideX; rx++) {
      const taps: Tap[] = [];
      for (let ky = 0; ky < g.kh; ky++) {
        const rowNum = ry + g.padY - ky * g.dilY;
        if (((rowNum % g.strideY) + g.strideY) % g.strideY !== 0) continue;
        for (let kx = 0; kx < g.kw; kx++) {
          const colNum = rx + g.padX - kx * g.dilX;
          if (((colNum % g.strideX) + g.strideX) % g.strideX !== 0) continue;
          taps.push({ row: rowNum / g.strideY, col: colNum / g.strideX, weight: ky * g.kw + kx });
        }
      }
      phases.push({ ry, rx, taps });
    }
  }
  return phases;
}

/** dx as a tiled GEMM: m = input channel, n = (image, iy, ix), k = (co, ky, kx). */
export const backwardDataGemmShader = tiledGemmShader({
  bindings: `
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;`,
  paramsBinding: 3,
  functions: /* wgsl */ `
fn load_a(m: u32, k: u32) -> f32 {
  let taps = p.kh * p.kw;
  return w[((k / taps) * p.in_c + m) * taps + k % taps];
}
fn load_b(k: u32, n: u32) -> f32 {
  let taps = p.kh * p.kw;
  let co = k / taps;
  let ky = (k % taps) / p.kw;
  let kx = k % p.kw;
  let pixels = p.in_h * p.in_w;
  let b = n / pixels;
  let iy = (n % pixels) / p.in_w;
  let ix = n % p.in_w;
  let ny = i32(iy) + p.pad_y - i32(ky * p.dil_y);
  let nx = i32(ix) + p.pad_x - i32(kx * p.dil_x);
  if (ny < 0 || nx < 0) { return 0.0; }
  let oy = u32(ny) / p.stride_y;
  let ox = u32(nx) / p.stride_x;
  if (u32(ny) % p.stride_y != 0u || u32(nx) % p.stride_x != 0u || oy >= p.out_h || ox >= p.out_w) {
    return 0.0;
  }
  return dy[((b * p.out_c + co) * p.out_h + oy) * p.out_w + ox];
}
fn store(m: u32, n: u32, split: u32, value: f32) {
  let pixels = p.in_h * p.in_w;
  dx[((n / pixels) * p.in_c + m) * pixels + n % pixels] = value;
}`,
});
