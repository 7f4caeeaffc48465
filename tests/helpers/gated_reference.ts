/** Float64 reference of the gated activation ELU(a) · σ(b) and its gradient (shared by tests). */
import { type Nd, nd } from "./reference.ts";

export const elu = (v: number) => (v > 0 ? v : Math.exp(v) - 1);
export const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/** y [N, 2C, H, W] (features, then gates) -> [N, C, H, W]. */
export function gateRef(y: Nd): Nd {
  const [n, c2, h, w] = y.shape, c = c2 / 2, plane = h * w;
  const out = nd([n, c, h, w]);
  for (let b = 0; b < n; b++) {
    for (let k = 0; k < c * plane; k++) {
      out.data[b * c * plane + k] = elu(y.data[b * c2 * plane + k]) *
        sigmoid(y.data[(b * c2 + c) * plane + k]);
    }
  }
  return out;
}

/** dL/dy given dL/dout: σ(b)·ELU'(a) for the features, ELU(a)·σ(b)(1 − σ(b)) for the gates. */
export function gateRefGrad(dout: Nd, y: Nd): Nd {
  const [n, c2, h, w] = y.shape, c = c2 / 2, plane = h * w;
  const dy = nd(y.shape);
  for (let b = 0; b < n; b++) {
    for (let k = 0; k < c * plane; k++) {
      const ia = b * c2 * plane + k, ig = (b * c2 + c) * plane + k, d = dout.data[b * c * plane + k];
      const a = y.data[ia], s = sigmoid(y.data[ig]);
      dy.data[ia] = d * s * (a > 0 ? 1 : Math.exp(a));
      dy.data[ig] = d * elu(a) * s * (1 - s);
    }
  }
  return dy;
}
