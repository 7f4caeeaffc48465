/** Module bookkeeping: a parameter shared by two modules (tied weights). */
import assert from "node:assert/strict";
import { gradScope } from "../../src/autograd/backward.ts";
import { Module } from "../../src/nn/module.ts";
import { add, mul } from "../../src/ops/arithmetic.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { sum } from "../../src/ops/reduce.ts";
import { SGD } from "../../src/optim/mod.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { gpuTest } from "../helpers/setup.ts";

/** A module that registers the tensor it is given as its parameter `w`. */
class Scale extends Module {
  constructor(readonly w: Tensor) {
    super();
    this.param("w", w);
  }
  forward(x: Tensor): Tensor {
    return mul(x, this.w);
  }
}

class Tied extends Module {
  readonly a: Scale;
  readonly b: Scale;
  constructor(w: Tensor) {
    super();
    this.a = this.child("a", new Scale(w));
    this.b = this.child("b", new Scale(w));
  }
  forward(x: Tensor): Tensor {
    return add(this.a.forward(x), this.b.forward(x));
  }
}

gpuTest(
  "a tied parameter is listed once (as PyTorch's named_parameters), in the state dict under both names",
  async () => {
    const m = new Tied(fromArray([1, 2], [2]));
    assert.deepEqual(m.namedParameters().map(([n]) => n), ["a.w"]);
    assert.deepEqual(Object.keys(m.stateDict()).sort(), ["a.w", "b.w"]);
    assert.equal(m.parameterCount(), 2);
    // An optimizer takes it (one tensor under two names is refused) and steps it once:
    // d/dw Σ 2·x·w = 2x, so w − 0.1·2x.
    const opt = new SGD({ params: m.namedParameters(), lr: 0.1 });
    const x = fromArray([3, 4], [2]);
    gradScope(() => sum(m.forward(x)).backward());
    opt.step();
    const w = await m.a.w.toArray();
    assert.ok(Math.abs(w[0] - 0.4) < 1e-6 && Math.abs(w[1] - 1.2) < 1e-6, `${w}`);
    x.dispose();
    m.dispose();
  },
);
