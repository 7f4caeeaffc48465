/**
 * gatedActivation (the fused ELU(a)·σ(b) of gated convolutions): forward and gradient against
 * the float64 reference (whose gradient is checked by finite differences), on planes that hold
 * a multiple of 4 elements (vec4 kernel) and planes that do not (scalar kernel), batch 1 and
 * many channels; large |values| saturate without NaN; bad shapes name the op.
 */
import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { gatedActivation } from "../../src/ops/gated_activation.ts";
import { sum } from "../../src/ops/reduce.ts";
import { ShapeError } from "../../src/tensor/shape.ts";
import { checkOp } from "../helpers/check_op.ts";
import { gateRef, gateRefGrad } from "../helpers/gated_reference.ts";
import { Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

gpuTest("gatedActivation: forward and gradient vs float64 (vec4 and scalar planes)", async () => {
  const rng = new Rng(5);
  for (const [n, c, h, w] of [[2, 3, 4, 4], [1, 1, 5, 3], [3, 5, 7, 7], [2, 4, 2, 6], [1, 9, 1, 1]]) {
    await checkOp({
      name: `gatedActivation [${n}, 2·${c}, ${h}, ${w}]`,
      inputs: [rng.array([n, 2 * c, h, w], -3, 3)],
      gpu: (y) => gatedActivation(y, c),
      ref: gateRef,
      refGrad: (dout, y) => [gateRefGrad(dout, y)],
      tol: { rtol: 1e-4, atol: 1e-6 },
    });
  }
});

gpuTest("gatedActivation: saturates cleanly at large |values|", async () => {
  // Features ±100 (exp overflows on one branch of ELU's select), gates ±100 (σ = 0 or 1).
  const values = [100, -100, 100, -100, 100, 100, -100, -100];
  const y = fromArray(Float32Array.from(values), [1, 2, 2, 2]);
  const out = await gatedActivation(y, 1).toArray();
  // Signed zeros are not the point: compare as numbers.
  const plain = (a: ArrayLike<number>) => Array.from(a, (v) => v + 0);
  assert.deepEqual(plain(out), [100, -1, 0, 0]);
  const { grads } = grad((t) => sum(gatedActivation(t, 1)), [y]);
  const dy = await grads[0].toArray();
  assert.ok(dy.every(Number.isFinite), `gradient has non-finite values: ${dy}`);
  assert.deepEqual(plain(dy), [1, 0, 0, 0, 0, 0, 0, 0]);
});

gpuTest("gatedActivation: a channel count that is not half the input's names the op and shape", () => {
  const y = fromArray(new Float32Array(2 * 5 * 3 * 3), [2, 5, 3, 3]);
  assert.throws(
    () => gatedActivation(y, 2),
    (e: Error) =>
      e instanceof ShapeError && /gatedActivation/.test(e.message) && /\[2, 5, 3, 3\]/.test(e.message),
  );
});
