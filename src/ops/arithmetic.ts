/**
 * Binary arithmetic with broadcasting, and scalar variants, each with its gradient rule.
 *
 * For z = f(a, b) with broadcasting, dL/da is the elementwise rule summed back over the
 * dimensions along which `a` was broadcast (sumToShape).
 */
import { needsGrad, record } from "../autograd/tape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { isNanWgsl, keepNanWgsl } from "../../shaders/common.ts";
import { mapElements } from "./elementwise.ts";
import { sumToShape } from "./reduce_axes.ts";
import { RELU_GRAD } from "./unary.ts";

/** Applies an elementwise gradient expression and reduces it to `like`'s shape. */
function gradTo(
  op: string,
  expr: string,
  inputs: Tensor[],
  like: Tensor,
  scalars?: [number, number?],
): Tensor {
  const full = mapElements(op, expr, inputs, { scalars });
  const reduced = sumToShape(full, like.shape);
  full.dispose();
  return reduced;
}

export function add(a: Tensor, b: Tensor): Tensor {
  const out = mapElements("add", "a + b", [a, b]);
  return record("add", [a, b], out, (dy) => [sumToShape(dy, a.shape), sumToShape(dy, b.shape)], []);
}

/**
 * max(a + b, 0) in one pass: the join of a residual block (ResNet's relu(out + shortcut))
 * without writing and re-reading the sum. The gradient is dy where the output is positive, for
 * both inputs (relu'(0) = 0; passed at a NaN, as relu's).
 */
export function addRelu(a: Tensor, b: Tensor): Tensor {
  const out = mapElements("addRelu", "keep_nan(a + b, max(a + b, 0.0))", [a, b], { helpers: keepNanWgsl });
  return record("addRelu", [a, b], out, (dy) => {
    const masked = mapElements("addRelu.backward", RELU_GRAD, [dy, out], { helpers: isNanWgsl });
    const grads = [sumToShape(masked, a.shape), sumToShape(masked, b.shape)];
    masked.dispose();
    return grads;
  });
}

export function sub(a: Tensor, b: Tensor): Tensor {
  const out = mapElements("sub", "a - b", [a, b]);
  return record(
    "sub",
    [a, b],
    out,
    (dy) => [sumToShape(dy, a.shape), gradTo("sub.backward", "-a", [dy], b)],
    [],
  );
}

/**
 * (a - b) / c in one pass: a model's input normalisation (x - mean) / std per channel, which as
 * sub then div writes and re-reads the whole batch once more. Gradients, each summed back to
 * its input's shape and computed only for inputs that need one (mean and std are constants):
 * da = dy / c, db = -dy / c, dc = -dy * out / c.
 */
export function subDiv(a: Tensor, b: Tensor, c: Tensor): Tensor {
  const out = mapElements("subDiv", "(a - b) / c", [a, b, c]);
  const [wantA, wantB, wantC] = [a, b, c].map((t) => needsGrad(t));
  return record("subDiv", [a, b, c], out, (dy) => [
    wantA ? gradTo("subDiv.backward", "a / b", [dy, c], a) : null,
    wantB ? gradTo("subDiv.backward", "-a / b", [dy, c], b) : null,
    wantC ? gradTo("subDiv.backward", "-a * b / c", [dy, out, c], c) : null,
  ]);
}

export function mul(a: Tensor, b: Tensor): Tensor {
  const out = mapElements("mul", "a * b", [a, b]);
  return record("mul", [a, b], out, (dy) => [
    gradTo("mul.backward", "a * b", [dy, b], a),
    gradTo("mul.backward", "a * b", [dy, a], b),
  ]);
}

export function div(a: Tensor, b: Tensor): Tensor {
  const out = mapElements("div", "a / b", [a, b]);
  // d(a/b)/da = 1/b, d(a/b)/db = -a/b², computed as -(a/b)/b (as PyTorch): b·b overflows for
  // |b| > ~2e19 and flushes to 0 below ~1e-19 where the quotients stay finite.
  return record("div", [a, b], out, (dy) => [
    gradTo("div.backward", "a / b", [dy, b], a),
    gradTo("div.backward", "-a * ((b / c) / c)", [dy, a, b], b),
  ]);
}

export function neg(a: Tensor): Tensor {
  const out = mapElements("neg", "-a", [a]);
  return record("neg", [a], out, (dy) => [mapElements("neg.backward", "-a", [dy])], []);
}

/** a + s */
export function addScalar(a: Tensor, s: number): Tensor {
  const out = mapElements("addScalar", "a + s0", [a], { scalars: [s] });
  return record("addScalar", [a], out, (dy) => [dy.alias()], []);
}

/** a * s */
export function mulScalar(a: Tensor, s: number): Tensor {
  const out = mapElements("mulScalar", "a * s0", [a], { scalars: [s] });
  return record(
    "mulScalar",
    [a],
    out,
    (dy) => [mapElements("mulScalar.backward", "a * s0", [dy], { scalars: [s] })],
    [],
  );
}

/** a - s */
export function subScalar(a: Tensor, s: number): Tensor {
  return addScalar(a, -s);
}

/** Largest finite f32, and the smallest normal one (GPUs may flush smaller values to zero). */
const F32_MAX = 3.4028234663852886e38, F32_MIN_NORMAL = 1.1754943508222875e-38;

/**
 * a / s, as a times 1/s. When 1/s is no normal f32 (s below ~3e-39, so 1/s overflows to
 * infinity, or above ~8e37, so it is denormal and may be flushed to zero) the factor is split
 * into two normal ones, applied one after the other: a / 1e-39 stays finite for small a.
 */
export function divScalar(a: Tensor, s: number): Tensor {
  const inverse = 1 / s, size = Math.abs(inverse);
  if (size === 0 || !Number.isFinite(size) || (size >= F32_MIN_NORMAL && size <= F32_MAX)) {
    return mulScalar(a, inverse);
  }
  const half = 2 ** Math.round(Math.log2(size) / 2);
  return mulScalar(mulScalar(a, half), inverse / half);
}

/** s - a */
export function rsubScalar(a: Tensor, s: number): Tensor {
  const out = mapElements("rsubScalar", "s0 - a", [a], { scalars: [s] });
  return record("rsubScalar", [a], out, (dy) => [mapElements("rsubScalar.backward", "-a", [dy])], []);
}

/** s / a */
export function rdivScalar(a: Tensor, s: number): Tensor {
  const out = mapElements("rdivScalar", "s0 / a", [a], { scalars: [s] });
  return record("rdivScalar", [a], out, (dy) => [
    mapElements("rdivScalar.backward", "-s0 * ((a / b) / b)", [dy, a], { scalars: [s] }),
  ]);
}
