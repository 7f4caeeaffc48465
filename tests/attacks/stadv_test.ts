/**
 * StAdv: the flow bound and the grid's box hold, x_adv ∈ [0,1] without NaN, zero steps give
 * back x, the first Adam step moves each coordinate by lr against the margin's gradient, and
 * the attack fools a trained classifier (also a random one, with EOT).
 */
import assert from "node:assert/strict";
import { grad } from "../../src/autograd/backward.ts";
import { marginLoss } from "../../src/attacks/losses.ts";
import { stAdv, stAdvWithGrid } from "../../src/attacks/stadv.ts";
import type { Model } from "../../src/attacks/types.ts";
import { gridSample, identityGrid } from "../../src/ops/grid_sample.ts";
import { sum } from "../../src/ops/reduce.ts";
import { tidy } from "../../src/tensor/scope.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";
import { accuracyOf, noisyModel, trainedClassifierHead } from "./toy_models.ts";

const BATCH = 40;

function fixture(): Promise<{ model: Model; x: Tensor; y: Tensor }> {
  return trainedClassifierHead(BATCH);
}

/** |grid − id| ≤ bound (+ f32 rounding), grid ∈ [−1,1]; x_adv ∈ [0,1] without NaN. */
async function assertValid(xAdv: Tensor, grid: Tensor, bound: number): Promise<number> {
  const id = identityGrid(grid.shape[0], grid.shape[1], grid.shape[2]);
  const [g, e, a] = [await grid.toArray(), await id.toArray(), await xAdv.toArray()];
  id.dispose();
  let largest = 0;
  for (let i = 0; i < g.length; i++) {
    assert.ok(g[i] >= -1 && g[i] <= 1, `grid[${i}] = ${g[i]} outside [-1, 1]`);
    const flow = Math.abs(g[i] - e[i]);
    assert.ok(flow <= bound + 1e-6, `grid[${i}] moved ${flow} > bound ${bound}`);
    largest = Math.max(largest, flow);
  }
  for (let i = 0; i < a.length; i++) assert.ok(a[i] >= 0 && a[i] <= 1, `x_adv[${i}] = ${a[i]}`);
  return largest;
}

gpuTest("stAdv: flow bound, [0,1], and it fools a trained classifier", async () => {
  const { model, x, y } = await fixture();
  const bound = 0.05;
  const { xAdv, grid } = stAdvWithGrid(model, x, y, { bound, steps: 15 });
  const largest = await assertValid(xAdv, grid, bound);
  assert.ok(largest > 0.5 * bound, `the flow hardly moved (${largest})`);
  const clean = await accuracyOf(model, x, y), adv = await accuracyOf(model, xAdv, y);
  console.log(`  bound 0.05, 15 steps: clean ${clean}, stAdv ${adv}`);
  assert.ok(adv <= clean - 0.3, `stAdv barely attacks: ${clean} -> ${adv}`);
  // x_adv is exactly the resampling of x at the returned grid.
  const again = tidy(() => gridSample(x, grid));
  assertClose(await again.toArray(), await xAdv.toArray(), "x_adv = gridSample(x, grid)", {
    rtol: 0,
    atol: 1e-6,
  });
  [xAdv, grid, again].forEach((t) => t.dispose());
});

gpuTest(
  "stAdv: zero steps return x; one Adam step moves each coordinate by lr against the margin",
  async () => {
    const { model, x, y } = await fixture();
    const same = stAdv(model, x, y, { steps: 0 });
    assertClose(await same.toArray(), await x.toArray(), "steps = 0", { rtol: 0, atol: 4e-6 });
    same.dispose();

    // Step 1 of Adam is lr·m/(sqrt(v) + ε) = lr·sign(g) (bias-corrected); at the identity the
    // smoothness term has zero gradient, so g is the margin's gradient.
    const lr = 0.004;
    const { xAdv, grid } = stAdvWithGrid(model, x, y, { steps: 1, lr, bound: 0.05 });
    const id = identityGrid(BATCH, 28, 28);
    const { value, grads } = grad((g) => sum(marginLoss(model(gridSample(x, g)), y)), [id]);
    const [g1, e, gm] = [await grid.toArray(), await id.toArray(), await grads[0].toArray()];
    const d = g1.length / BATCH;
    let moved = 0;
    for (let n = 0; n < BATCH; n++) {
      // keep-best: a sample keeps either the identity or the stepped grid.
      if (g1.slice(n * d, (n + 1) * d).every((v, i) => v === e[n * d + i])) continue;
      moved++;
      for (let i = n * d; i < (n + 1) * d; i++) {
        const expected = Math.abs(gm[i]) > 1e-5 ? -lr * Math.sign(gm[i]) : null;
        if (expected === null) continue; // tiny gradients take steps shorter than lr (Adam's ε)
        assertClose([g1[i] - e[i]], [expected], `sample ${n}, coordinate ${i}`, { rtol: 2e-3, atol: 2e-6 });
      }
    }
    assert.ok(moved > BATCH / 2, `only ${moved} samples improved with one step`);
    [xAdv, grid, id, value, ...grads].forEach((t) => t.dispose());
  },
);

gpuTest("stAdv: EOT over a random model keeps the invariants and still attacks", async () => {
  const { model, x, y } = await fixture();
  const random = noisyModel(model, 0.05);
  const bound = 0.05;
  const { xAdv, grid } = stAdvWithGrid(random, x, y, { bound, steps: 8, eot: 2 });
  await assertValid(xAdv, grid, bound);
  const clean = await accuracyOf(model, x, y), adv = await accuracyOf(model, xAdv, y);
  console.log(`  EOT 2 on a noisy model, 8 steps: clean ${clean} -> ${adv} (base model)`);
  assert.ok(adv < clean, `no effect: ${clean} -> ${adv}`);
  [xAdv, grid].forEach((t) => t.dispose());
});

gpuTest("stAdv: clear errors for bad arguments", async () => {
  const { model, x, y } = await fixture();
  assert.throws(() => stAdv(model, x.alias([BATCH, 784]), y), /expects x f32 \[N, C, H, W\]/);
  assert.throws(() => stAdv(model, x, y, { bound: -1 }), /bound must be finite and >= 0/);
  assert.throws(() => stAdv(model, x, y, { steps: 1.5 }), /steps must be an integer/);
  assert.throws(() => stAdv(model, x, y, { eot: 0 }), /eot must be an integer >= 1/);
});
