/**
 * Smoke subset on both wgpu backends (see backend_test.ts): conv2d forward and gradients against
 * the float64 reference on the layer kinds the models use, with both kernel variants.
 */
import { cfg, checkConfig } from "../helpers/conv_reference.ts";
import { gpuTest } from "../helpers/setup.ts";

gpuTest("smoke: conv2d forward, dx, dw, dbias (3x3 at strides 1 and 2, 1x1 shortcut, dilated)", async () => {
  const configs = [
    cfg({ batch: 2, inC: 3, outC: 17, h: 9, w: 12, kh: 3, kw: 3, padding: [1, 1] }),
    cfg({ batch: 2, inC: 5, outC: 6, h: 8, w: 8, kh: 3, kw: 3, padding: [1, 1], stride: [2, 2] }),
    cfg({ inC: 7, outC: 9, h: 7, w: 6, kh: 1, kw: 1, stride: [2, 2], bias: false }),
    cfg({ inC: 3, outC: 4, h: 8, w: 8, kh: 3, kw: 3, padding: [2, 2], dilation: [2, 2] }),
  ];
  let seed = 900;
  for (const variant of ["cpu", "gpu"] as const) {
    for (const c of configs) await checkConfig(c, variant, seed++);
  }
});
