/**
 * A float64 conv2d reference straight from the definition (forward and the gradients of each
 * term y += x*w), the configurations it takes, and a check of the GPU op against it (forward,
 * analytic gradients and finite differences). Shared by the conv2d tests and the smoke subset.
 */
import type { Conv2dOptions, Conv2dVariant } from "../../src/ops/conv2d.ts";
import { conv2d } from "../../src/ops/conv2d.ts";
import { checkOp } from "./check_op.ts";
import { type Nd, nd, Rng } from "./reference.ts";

export interface Config {
  batch: number;
  inC: number;
  outC: number;
  h: number;
  w: number;
  kh: number;
  kw: number;
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  bias: boolean;
}

export function outSize(c: Config): [number, number] {
  const ho = Math.floor((c.h + 2 * c.padding[0] - c.dilation[0] * (c.kh - 1) - 1) / c.stride[0]) + 1;
  const wo = Math.floor((c.w + 2 * c.padding[1] - c.dilation[1] * (c.kw - 1) - 1) / c.stride[1]) + 1;
  return [ho, wo];
}

/** Calls f(n, co, ci, oy, ox, ky, kx, xIndex, wIndex, yIndex) for every term of the conv sum. */
export function forEachTerm(
  c: Config,
  f: (xi: number, wi: number, yi: number, co: number) => void,
): void {
  const [ho, wo] = outSize(c);
  for (let n = 0; n < c.batch; n++) {
    for (let co = 0; co < c.outC; co++) {
      for (let oy = 0; oy < ho; oy++) {
        for (let ox = 0; ox < wo; ox++) {
          const yi = ((n * c.outC + co) * ho + oy) * wo + ox;
          for (let ci = 0; ci < c.inC; ci++) {
            for (let ky = 0; ky < c.kh; ky++) {
              const iy = oy * c.stride[0] - c.padding[0] + ky * c.dilation[0];
              if (iy < 0 || iy >= c.h) continue;
              for (let kx = 0; kx < c.kw; kx++) {
                const ix = ox * c.stride[1] - c.padding[1] + kx * c.dilation[1];
                if (ix < 0 || ix >= c.w) continue;
                f(
                  ((n * c.inC + ci) * c.h + iy) * c.w + ix,
                  ((co * c.inC + ci) * c.kh + ky) * c.kw + kx,
                  yi,
                  co,
                );
              }
            }
          }
        }
      }
    }
  }
}

/** Float64 reference forward, straight from the definition. */
export function convRef(c: Config, x: Nd, w: Nd, b?: Nd): Nd {
  const [ho, wo] = outSize(c);
  const y = nd([c.batch, c.outC, ho, wo]);
  if (b) {
    for (let i = 0; i < y.data.length; i++) y.data[i] = b.data[Math.floor(i / (ho * wo)) % c.outC];
  }
  forEachTerm(c, (xi, wi, yi) => (y.data[yi] += x.data[xi] * w.data[wi]));
  return y;
}

/** Float64 reference gradients: each term y += x*w sends dy*w to x and dy*x to w. */
export function convRefGrad(c: Config, dy: Nd, x: Nd, w: Nd): Nd[] {
  const dx = nd(x.shape), dw = nd(w.shape), db = nd([c.outC]);
  forEachTerm(c, (xi, wi, yi) => {
    dx.data[xi] += dy.data[yi] * w.data[wi];
    dw.data[wi] += dy.data[yi] * x.data[xi];
  });
  const [ho, wo] = outSize(c);
  for (let i = 0; i < dy.data.length; i++) db.data[Math.floor(i / (ho * wo)) % c.outC] += dy.data[i];
  return [dx, dw, db];
}

export function options(c: Config, variant: Conv2dVariant): Conv2dOptions {
  return { stride: c.stride, padding: c.padding, dilation: c.dilation, variant };
}

export function describe(c: Config): string {
  return `x[${c.batch},${c.inC},${c.h},${c.w}] w[${c.outC},${c.inC},${c.kh},${c.kw}] ` +
    `s${c.stride} p${c.padding} d${c.dilation}${c.bias ? " +bias" : ""}`;
}

export async function checkConfig(c: Config, variant: Conv2dVariant, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const inputs = [rng.array([c.batch, c.inC, c.h, c.w]), rng.array([c.outC, c.inC, c.kh, c.kw])];
  if (c.bias) inputs.push(rng.array([c.outC]));
  await checkOp({
    name: `conv2d ${variant} ${describe(c)}`,
    inputs,
    gpu: (x, w, b) => conv2d(x, w, b, options(c, variant)),
    ref: (x, w, b) => convRef(c, x, w, b),
    refGrad: (dy, x, w) => convRefGrad(c, dy, x, w).slice(0, c.bias ? 3 : 2),
    tol: { rtol: 1e-4, atol: 1e-4 },
    fdSamples: 12,
    seed,
  });
}

const base = { batch: 1, stride: [1, 1], padding: [0, 0], dilation: [1, 1], bias: true } as const;
export const cfg = (c: Partial<Config> & Pick<Config, "inC" | "outC" | "h" | "w" | "kh" | "kw">): Config => ({
  ...base,
  stride: [...base.stride],
  padding: [...base.padding],
  dilation: [...base.dilation],
  ...c,
});
