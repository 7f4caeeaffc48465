/**
 * Elementwise math and activations, each with its gradient rule, on the generic elementwise
 * kernel (`mapElements`). Gradient conventions follow PyTorch: at a kink the derivative is
 * that of one side, fixed below (relu'(0) = 0, |x|'(0) = 0, clamp passes the gradient where
 * lo <= x <= hi, maximum/minimum split it half and half on ties).
 *
 * Where the derivative is a function of the output, the rule reads the saved output instead
 * of recomputing (exp: y, sigmoid: y(1 - y), tanh: 1 - y^2, sqrt: 1 / (2y)).
 */
import { record } from "../autograd/tape.ts";
import { ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { extremumNanWgsl, isNanWgsl, keepNanWgsl } from "../../shaders/common.ts";
import { mapElements } from "./elementwise.ts";
import { sumToShape } from "./reduce_axes.ts";

/**
 * y = f(x) whose derivative is a function of x: `grad` is a WGSL expression of `a` = dy and
 * `b` = x (null: no gradient). `s0`, `s1` are the scalars; `helpers` extra WGSL functions.
 */
function unaryOfInput(
  op: string,
  forward: string,
  x: Tensor,
  grad: string | null,
  scalars?: [number, number?],
  helpers?: string,
): Tensor {
  const y = mapElements(op, forward, [x], { scalars, helpers });
  // A zero derivative still records the op, so the output counts as depending on x.
  if (grad === null) return record(op, [x], y, () => [null], []);
  return record(op, [x], y, (dy) => [mapElements(`${op}.backward`, grad, [dy, x], { scalars, helpers })], [
    x,
  ]);
}

/** y = f(x) whose derivative is a function of y: `grad` over `a` = dy and `b` = y. */
function unaryOfOutput(op: string, forward: string, x: Tensor, grad: string, helpers?: string): Tensor {
  const y = mapElements(op, forward, [x], { helpers });
  return record(op, [x], y, (dy) => [mapElements(`${op}.backward`, grad, [dy, y])], [y]);
}

/** e^x; d/dx = e^x = y. */
export function exp(x: Tensor): Tensor {
  return unaryOfOutput("exp", "exp(a)", x, "a * b");
}

/** Natural logarithm; d/dx = 1/x. */
export function log(x: Tensor): Tensor {
  return unaryOfInput("log", "log(a)", x, "a / b");
}

/** Square root; d/dx = 1/(2 sqrt(x)) = 1/(2y) (infinite at 0, as in PyTorch). */
export function sqrt(x: Tensor): Tensor {
  return unaryOfOutput("sqrt", "sqrt(a)", x, "a * 0.5 / b");
}

/** x^2; d/dx = 2x. */
export function square(x: Tensor): Tensor {
  return unaryOfInput("square", "a * a", x, "2.0 * a * b");
}

/** |x|; d/dx = sign(x), 0 at 0. */
export function abs(x: Tensor): Tensor {
  return unaryOfInput("abs", "abs(a)", x, "a * sign(b)");
}

/** -1, 0 or 1. Its derivative is 0 wherever it exists: no gradient flows (x gets none). */
export function sign(x: Tensor): Tensor {
  return unaryOfInput("sign", "sign(a)", x, null);
}

/** min(max(x, lo), hi); the gradient passes where lo <= x <= hi (bounds included). */
export function clamp(x: Tensor, lo: number, hi: number): Tensor {
  if (!(lo <= hi)) throw new ShapeError("clamp", `lower bound ${lo} must not exceed upper bound ${hi}`);
  const grad = "select(0.0, a, b >= s0 && b <= s1)";
  return unaryOfInput("clamp", "keep_nan(a, clamp(a, s0, s1))", x, grad, [lo, hi], keepNanWgsl);
}

/** max(x, 0), NaN kept; relu'(0) = 0, and dy passes at a NaN (as PyTorch's `x <= 0` mask). */
export function relu(x: Tensor): Tensor {
  return unaryOfInput("relu", "keep_nan(a, max(a, 0.0))", x, RELU_GRAD, undefined, keepNanWgsl);
}

/** dy (`a`) where x (`b`) > 0 or is NaN: PyTorch zeroes it where x <= 0, false for a NaN. */
export const RELU_GRAD = "select(0.0, a, b > 0.0 || is_nan(b))";

/** x for x > 0, slope * x otherwise; the derivative at 0 is `slope` (as PyTorch). */
export function leakyRelu(x: Tensor, slope = 0.01): Tensor {
  return unaryOfInput("leakyRelu", "select(a * s0, a, a > 0.0)", x, "select(a * s0, a, b > 0.0)", [slope]);
}

/**
 * x for x > 0, alpha (e^x - 1) otherwise; d/dx = alpha e^x for x <= 0 (alpha at 0, as
 * PyTorch). Recomputing e^x reads two tensors instead of three.
 */
export function elu(x: Tensor, alpha = 1): Tensor {
  return unaryOfInput(
    "elu",
    "select(s0 * (exp(a) - 1.0), a, a > 0.0)",
    x,
    "select(a * s0 * exp(b), a, b > 0.0)",
    [
      alpha,
    ],
  );
}

/** 1 / (1 + e^-x); d/dx = y (1 - y). Saturates cleanly: e^-x = inf gives 0, not NaN. */
export function sigmoid(x: Tensor): Tensor {
  return unaryOfOutput("sigmoid", "1.0 / (1.0 + exp(-a))", x, "a * b * (1.0 - b)");
}

/**
 * tanh(x); d/dx = 1 - y^2. The input is clamped to +-15 (where tanh is 1 to f32 precision),
 * because some drivers compute tanh through e^2x, which overflows to inf / inf = NaN; a NaN is
 * kept (clamp may turn it into a bound: lavapipe gave tanh(NaN) = -1).
 */
export function tanh(x: Tensor): Tensor {
  return unaryOfOutput(
    "tanh",
    "keep_nan(a, tanh(clamp(a, -15.0, 15.0)))",
    x,
    "a * (1.0 - b * b)",
    keepNanWgsl,
  );
}

/**
 * x^p for a constant exponent, real-valued like PyTorch (C99's pow): negative bases work for
 * integer p (odd p keeps the sign), give NaN for fractional p (but (-inf)^p = +inf or +0);
 * x^0 = 1 (also at 0 and NaN); NaN^p = NaN; (±0)^p for p < 0 is ±inf for odd p, else +inf.
 * WGSL's pow is only defined for positive bases, hence the helper. d/dx = p x^(p-1), and 0 for
 * p = 0 (also at x = 0, where 0 * 0^-1 would be NaN).
 */
export function pow(x: Tensor, p: number): Tensor {
  if (!Number.isFinite(p)) throw new ShapeError("pow", `exponent must be finite, got ${p}`);
  return unaryOfInput("pow", "pow_real(a, s0)", x, "select(a * s0 * pow_real(b, s0 - 1.0), 0.0, s0 == 0.0)", [
    p,
  ], POW_REAL);
}

const POW_REAL = /* wgsl */ `${isNanWgsl}
fn pow_real(x: f32, p: f32) -> f32 {
  if (p == 0.0) { return 1.0; }
  if (is_nan(x)) { return x; }
  let odd = fract(p) == 0.0 && fract(p * 0.5) != 0.0;
  let inf = bitcast<f32>(0x7f800000u);
  // ±0: odd p keeps the sign (0^3 = 0, (-0)^-1 = -inf), even or fractional p gives +0 or +inf.
  if (x == 0.0) { return select(select(inf, 1.0 / x, odd), select(0.0, x, odd), p > 0.0); }
  let m = pow(abs(x), p);
  if (x > 0.0) { return m; }
  if (fract(p) != 0.0) {
    if (x < -3.4028235e38) { return select(0.0, inf, p > 0.0); } // (-inf)^p
    return bitcast<f32>(0x7fc00000u);
  }
  return select(m, -m, odd);
}`;

/**
 * Elementwise maximum with broadcasting. Gradient as PyTorch: dy goes to the larger input;
 * on ties each input gets dy / 2. Summed back over broadcast dimensions.
 */
export function maximum(a: Tensor, b: Tensor): Tensor {
  return extremum("maximum", ">", a, b);
}

/** Elementwise minimum with broadcasting; dy goes to the smaller input, halved on ties. */
export function minimum(a: Tensor, b: Tensor): Tensor {
  return extremum("minimum", "<", a, b);
}

function extremum(op: string, wins: ">" | "<", a: Tensor, b: Tensor): Tensor {
  // NaN wins, as in PyTorch.
  const out = mapElements(op, `${wins === ">" ? "max" : "min"}_nan(a, b)`, [a, b], {
    helpers: extremumNanWgsl,
  });
  // Share of dy for the first operand (`b` here) against the second (`c`): 1, 1/2 or 0; 1 for
  // both where either is NaN (PyTorch only zeroes the losing side, and a NaN loses no compare).
  const share = (mine: string, other: string) =>
    `a * select(select(select(0.0, 0.5, ${mine} == ${other}), 1.0, ${mine} ${wins} ${other}), 1.0, ` +
    `is_nan(${mine}) || is_nan(${other}))`;
  const gradTo = (dy: Tensor, mine: Tensor, other: Tensor) => {
    const full = mapElements(`${op}.backward`, share("b", "c"), [dy, mine, other], { helpers: isNanWgsl });
    const reduced = sumToShape(full, mine.shape);
    full.dispose();
    return reduced;
  };
  return record(op, [a, b], out, (dy) => [gradTo(dy, a, b), gradTo(dy, b, a)]);
}
