/**
 * Spectral normalisation (Miyato et al., 2018), as torch.nn.utils.spectral_norm.
 *
 * A weight W of shape [out, ...] is viewed as a matrix [rows = out, cols = in·kh·kw]. Its
 * spectral norm σ(W), the largest singular value, is estimated by power iteration with two
 * persistent unit vectors u [rows] and v [cols]:
 *
 *   v ← Wᵀu / ‖Wᵀu‖,   u ← Wv / ‖Wv‖,   σ ≈ uᵀWv
 *
 * and the layer uses W / σ, whose largest singular value is then ≈ 1 (a 1-Lipschitz layer,
 * which keeps a GAN discriminator from becoming arbitrarily sharp). W changes little per
 * training step, so one iteration per forward keeps u and v near the top singular vectors.
 *
 * Gradient: u and v are treated as constants (PyTorch does the same). With Y = W/σ and
 * ∂σ/∂W = u vᵀ:
 *   dL/dW = dY/σ − (Σ dY⊙W)/σ² · u vᵀ
 *
 * Kernels in shaders/spectral_norm.ts. Power iteration and σ are not differentiated.
 */
import {
  divideBySigmaShader,
  MATVEC_CHUNK,
  matvecPartialsShader,
  normalizeVectorShader,
  sigmaShader,
  spectralNormBackwardShader,
  VECTOR_LANES,
} from "../../shaders/spectral_norm.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkFloat, mapElements } from "./elementwise.ts";
import { checkLoopLength, grid1d, launch, output, params } from "./kernel.ts";
import { sum } from "./reduce.ts";

/** torch.nn.functional.normalize's default: guards the division for an all-zero vector. */
export const SPECTRAL_NORM_EPS = 1e-12;

/** Checks W [rows, ...], u [rows], v [cols] and returns (rows, cols). */
function matrixDims(op: string, weight: Tensor, u: Tensor, v: Tensor): [number, number] {
  checkFloat(op, weight, u, v);
  if (weight.rank < 2 || weight.size === 0) {
    throw new ShapeError(op, `weight must have rank >= 2 and no empty dimension, got ${fmt(weight.shape)}`);
  }
  const rows = weight.shape[0], cols = weight.size / rows;
  if (u.rank !== 1 || u.size !== rows || v.rank !== 1 || v.size !== cols) {
    throw new ShapeError(
      op,
      `weight ${fmt(weight.shape)} is a [${rows}, ${cols}] matrix, so u must be [${rows}] and v [${cols}]; ` +
        `got u ${fmt(u.shape)}, v ${fmt(v.shape)}`,
    );
  }
  return [rows, cols];
}

/** Partial sums [chunks, n] of Wx (n = rows) or, `transposed`, of Wᵀx (n = cols). */
function matvecPartials(op: string, weight: Tensor, x: Tensor, transposed: boolean) {
  const rows = weight.shape[0], cols = weight.size / rows;
  const n = transposed ? cols : rows, terms = transposed ? rows : cols;
  const chunks = Math.ceil(terms / MATVEC_CHUNK);
  const partial = output(op, [chunks, n]);
  const p = params().u32(cols, n, terms, MATVEC_CHUNK, n * chunks);
  launch(op, matvecPartialsShader(transposed), [weight, x, partial, p], grid1d(n * chunks));
  return { partial, n, chunks };
}

/** Each lane of a vector kernel loops over ⌈n/lanes⌉ elements, each summing `chunks` partials. */
function checkVectorLoops(op: string, n: number, chunks: number): void {
  const iterations = 2 * Math.ceil(n / VECTOR_LANES) * (chunks + 1);
  checkLoopLength(op, iterations, `a vector of ${n} elements summed over ${chunks} chunks`);
}

/** out [n] = x / ‖x‖ with x = the chunk sums of `partial` [chunks, n]; also into `state`. */
function normalizeChunks(
  op: string,
  partial: Tensor,
  n: number,
  chunks: number,
  state: Tensor | undefined,
  eps: number,
): Tensor {
  checkVectorLoops(op, n, chunks);
  const out = output(op, [n]);
  const p = params().u32(n, chunks).f32(eps);
  launch(
    op,
    normalizeVectorShader(state !== undefined),
    state ? [partial, out, state, p] : [partial, out, p],
    [1],
  );
  return out;
}

/**
 * x / max(‖x‖₂, eps) for a vector (any shape, taken as flat). With `state`, the result is also
 * written into `state` in place (same size as x, its own buffer). No gradient.
 */
export function normalizeVector(x: Tensor, state?: Tensor, eps = SPECTRAL_NORM_EPS): Tensor {
  const op = "normalizeVector";
  checkFloat(op, x, ...(state ? [state] : []));
  if (state && (state.size !== x.size || state.buffer === x.buffer)) {
    throw new ShapeError(
      op,
      `state ${state.describe()} must have the ${x.size} elements of x ${x.describe()} in its own buffer`,
    );
  }
  if (x.size === 0) return output(op, x.shape);
  const out = normalizeChunks(op, x, x.size, 1, state, eps);
  const shaped = out.alias(x.shape);
  out.dispose();
  return shaped;
}

/**
 * `iterations` power-iteration steps. The persistent u and v are updated in place; the
 * returned tensors are fresh copies of the final vectors. Use those for this forward pass: a
 * later in-place update must not change what this pass's backward reads (PyTorch clones u and
 * v for the same reason). With 0 iterations, views of u and v.
 */
export function powerIteration(
  weight: Tensor,
  u: Tensor,
  v: Tensor,
  iterations = 1,
  eps = SPECTRAL_NORM_EPS,
): { u: Tensor; v: Tensor } {
  const op = "powerIteration";
  matrixDims(op, weight, u, v);
  if (!Number.isInteger(iterations) || iterations < 0) {
    throw new ShapeError(op, `iterations must be an integer >= 0, got ${iterations}`);
  }
  let uNow = u.alias(), vNow = v.alias();
  for (let i = 0; i < iterations; i++) {
    const wtu = matvecPartials(op, weight, uNow, true);
    vNow.dispose();
    vNow = normalizeChunks(op, wtu.partial, wtu.n, wtu.chunks, v, eps);
    wtu.partial.dispose();
    const wv = matvecPartials(op, weight, vNow, false);
    uNow.dispose();
    uNow = normalizeChunks(op, wv.partial, wv.n, wv.chunks, u, eps);
    wv.partial.dispose();
  }
  return { u: uNow, v: vNow };
}

/** σ = uᵀWv, a scalar tensor (shape []). No gradient (see spectralNormalize). */
export function spectralSigma(weight: Tensor, u: Tensor, v: Tensor): Tensor {
  const op = "spectralSigma";
  const [rows] = matrixDims(op, weight, u, v);
  const wv = matvecPartials(op, weight, v, false);
  checkVectorLoops(op, rows, wv.chunks);
  const sigma = output(op, []);
  launch(op, sigmaShader, [wv.partial, u, sigma, params().u32(rows, wv.chunks)], [1]);
  wv.partial.dispose();
  return sigma;
}

/** W / σ with σ = uᵀWv, differentiable w.r.t. W (u, v constants). Same shape as W. */
export function spectralNormalize(weight: Tensor, u: Tensor, v: Tensor): Tensor {
  const op = "spectralNormalize";
  const [, cols] = matrixDims(op, weight, u, v);
  const sigma = spectralSigma(weight, u, v);
  const y = output(op, weight.shape);
  launch(op, divideBySigmaShader, [weight, sigma, y, params().u32(weight.size)], grid1d(weight.size));
  if (!needsGrad(weight)) {
    sigma.dispose();
    return y;
  }
  // The rule reads u and v too: a later power iteration writing them must not pass unnoticed.
  return record(op, [weight], y, (dy) => {
    const products = mapElements(`${op}.backward`, "a * b", [dy, weight]);
    const t = sum(products); // Σ dY⊙W
    products.dispose();
    const dw = output(`${op}.backward`, weight.shape);
    const p = params().u32(weight.size, cols);
    launch(`${op}.backward`, spectralNormBackwardShader, [dy, u, v, sigma, t, dw, p], grid1d(weight.size));
    t.dispose();
    return [dw];
  }, [weight, u, v]);
}
