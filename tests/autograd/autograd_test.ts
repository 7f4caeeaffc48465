import assert from "node:assert/strict";
import { detach, grad, gradScope, InPlaceModificationError } from "../../src/autograd/backward.ts";
import { isRecording, needsGrad, noGrad, record } from "../../src/autograd/tape.ts";
import { add, mul, mulScalar, neg, sub } from "../../src/ops/arithmetic.ts";
import { fromArray, zeros } from "../../src/ops/creation.ts";
import { sum } from "../../src/ops/reduce.ts";
import { tidy } from "../../src/tensor/scope.ts";
import { DisposedTensorError } from "../../src/tensor/tensor.ts";
import { conv2d } from "../../src/ops/conv2d.ts";
import { exp, log, relu } from "../../src/ops/unary.ts";
import { fillBits } from "../../src/ops/kernel.ts";
import { SGD } from "../../src/optim/sgd.ts";
import { clone, concat, slice } from "../../src/ops/shape_ops.ts";
import { mean } from "../../src/ops/reduce.ts";
import { spectralNormalize } from "../../src/ops/spectral_norm.ts";
import { maskedInput } from "../../src/purify/transforms.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { assertClose } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

function param(values: number[], shape?: number[]) {
  const t = fromArray(values, shape);
  t.requiresGrad = true;
  return t;
}

gpuTest("tape: nothing is recorded outside a gradient scope", () => {
  const w = param([1, 2]);
  assert.equal(isRecording(), false);
  assert.equal(needsGrad(w), false);
  gradScope(() => {
    assert.equal(isRecording(), true);
    assert.equal(needsGrad(w), true);
    noGrad(() => assert.equal(needsGrad(w), false));
  });
  w.dispose();
});

gpuTest("backward: accumulates into parameter grads across calls (PyTorch semantics)", async () => {
  const w = param([1, 2, 3]);
  const x = fromArray([4, 5, 6]);
  // L = sum(w*w*x) -> dL/dw = 2 w x, and w is used twice (the tape sums both paths).
  gradScope(() => sum(mul(mul(w, w), x)).backward());
  assert.deepEqual([...await w.grad!.toArray()], [8, 20, 36]);
  gradScope(() => sum(mul(w, x)).backward());
  assert.deepEqual([...await w.grad!.toArray()], [12, 25, 42]);
  assert.equal(x.grad, null, "inputs without requiresGrad get no grad");
  for (const t of [w, w.grad!, x]) t.dispose();
});

gpuTest("grad(): input gradients only, parameters untouched, unused inputs get zeros", async () => {
  const w = param([2, 3]);
  const x = fromArray([1, 1]);
  const unused = fromArray([5, 5]);
  const { value, grads } = grad((xi) => sum(mul(mul(xi, xi), w)), [x, unused]);
  assert.equal(await value.item(), 5);
  assert.deepEqual([...await grads[0].toArray()], [4, 6]);
  assert.deepEqual([...await grads[1].toArray()], [0, 0]);
  assert.equal(w.grad, null, "grad() does not touch parameter grads");
  for (const t of [w, x, unused, value, ...grads]) t.dispose();
});

gpuTest("grad() inside a training scope does not record on the outer tape", async () => {
  const w = param([1, 1]);
  const x = fromArray([3, 4]);
  gradScope(() => {
    // An attack-style inner gradient, then a training loss on its detached result.
    const { grads } = grad((xi) => sum(mul(xi, w)), [x]);
    const loss = sum(mul(w, grads[0]));
    loss.backward();
  });
  // d/dw sum(w * g) with g = w treated as a constant (no second-order term) = g = [1, 1]
  assert.deepEqual([...await w.grad!.toArray()], [1, 1]);
  for (const t of [w, w.grad!, x]) t.dispose();
});

gpuTest("detach and noGrad stop gradients", async () => {
  const w = param([1, 2]);
  gradScope(() => sum(add(mul(w, w), mul(detach(w), w))).backward());
  // d/dw (w^2 + c*w) with c = w detached = 2w + c = 3w
  assert.deepEqual([...await w.grad!.toArray()], [3, 6]);
  assert.throws(
    () => gradScope(() => noGrad(() => sum(mul(w, w))).backward()),
    /does not depend on any tensor that needs a gradient/,
  );
  for (const t of [w, w.grad!]) t.dispose();
});

gpuTest("backward: clear errors outside a scope, for non-scalar losses and bad gradient shapes", () => {
  const w = param([1, 2]);
  const y = mulScalar(w, 2);
  assert.throws(() => y.backward(), /no gradient scope is recording/);
  assert.throws(() => gradScope(() => mulScalar(w, 2).backward()), /loss must be a scalar \(got \[2\]\)/);
  assert.throws(
    () =>
      gradScope(() => {
        const out = record("badOp", [w], sum(w), () => [zeros([3])]);
        out.backward();
      }),
    /badOp\.backward: gradient for input 0 has shape \[3\] but the input is \[2\]/,
  );
  y.dispose();
  w.dispose();
});

gpuTest(
  "backward twice through conv2d doubles the grads; a tidy() that frees saved tensors says so",
  async () => {
    // conv2d's backward consumes the weight pack its forward made: the second backward packs again.
    const w = param(Array.from({ length: 2 * 3 * 3 * 3 }, (_, i) => Math.sin(i)), [2, 3, 3, 3]);
    const x = fromArray(Array.from({ length: 3 * 5 * 5 }, (_, i) => Math.cos(i)), [1, 3, 5, 5]);
    x.requiresGrad = true;
    gradScope(() => sum(conv2d(x, w, undefined, { padding: 1 })).backward());
    const [once, xOnce] = [await w.grad!.toArray(), await x.grad!.toArray()];
    w.grad!.dispose(), x.grad!.dispose();
    w.grad = x.grad = null;
    gradScope(() => {
      const loss = sum(conv2d(x, w, undefined, { padding: 1 }));
      loss.backward();
      loss.backward();
    });
    assertClose(await w.grad!.toArray(), once.map((v) => 2 * v), "dw after two backward() calls");
    assertClose(await x.grad!.toArray(), xOnce.map((v) => 2 * v), "dx after two backward() calls");

    // The internal statistics crossEntropy saves are freed by the tidy around it.
    const logits = param([1, 2, 3, 4], [2, 2]);
    const labels = fromArray(new Int32Array([0, 1]), [2], "i32");
    assert.throws(
      () => gradScope(() => tidy(() => crossEntropy(logits, labels)).backward()),
      (e: Error) =>
        e instanceof DisposedTensorError &&
        /^crossEntropy\.backward: a tensor this op saved/.test(e.message) &&
        /tidy\(\) inside the gradient scope/.test(e.message),
    );
    for (const t of [w, w.grad!, x, x.grad!, logits, labels]) t.dispose();
  },
);

gpuTest("backward: a 3000-op chain runs iteratively (no recursion) and frees intermediates", async (gpu) => {
  const w = param([1]);
  const base = gpu.memory().bytesInUse;
  gradScope(() => {
    let y = w;
    for (let i = 0; i < 3000; i++) y = sub(mulScalar(y, 1), mulScalar(w, 0));
    sum(y).backward();
  });
  assert.deepEqual([...await w.grad!.toArray()], [1]);
  w.grad!.dispose();
  w.grad = null;
  assert.equal(gpu.memory().bytesInUse, base, "the scope freed its intermediates");
  tidy(() => zeros([1]));
  w.dispose();
});

gpuTest("Tensor.view is differentiable (PyTorch's view); alias and detach are not", async () => {
  const x = fromArray([1, 2, 3, 4], [4]);
  // d/dx [Σ view(x·x) + Σ x] = 2x + 1 (the view used to cut the first path: [1, 1, 1, 1]).
  const { grads: [dx] } = grad((a) => add(sum(mul(a, a).view([2, -1])), sum(a)), [x]);
  assert.deepEqual([...await dx.toArray()], [3, 5, 7, 9]);
  // Through an alias (an op's raw output view) or a detached tensor, no gradient flows.
  const { grads: [dAlias] } = grad((a) => add(sum(mul(a, a).alias([2, 2])), sum(a)), [x]);
  const { grads: [dDetach] } = grad((a) => add(sum(detach(mul(a, a))), sum(a)), [x]);
  assert.deepEqual([...await dAlias.toArray()], [1, 1, 1, 1]);
  assert.deepEqual([...await dDetach.toArray()], [1, 1, 1, 1]);
  assert.throws(() => x.view([3]), /view: cannot reshape \[4\] \(4 elements\) into \[3\]/);
  for (const t of [x, dx, dAlias, dDetach]) t.dispose();
});

gpuTest("grad: an int or disposed input is an error, not a zero gradient", () => {
  const labels = fromArray(Int32Array.from([1, 2]));
  assert.throws(
    () => grad((a) => sum(a), [labels]),
    /grad: input 0 is i32\[2\]; gradients exist for f32 tensors only/,
  );
  const gone = fromArray([1, 2], [2]);
  gone.dispose();
  assert.throws(() => grad((a) => sum(a), [gone]), (e: Error) => e instanceof DisposedTensorError);
  labels.dispose();
});

gpuTest(
  "backward: refuses tensors changed in place since the forward pass (PyTorch's version check)",
  async () => {
    const w = param([1, 2, 3]);
    const x = fromArray([4, 5, 6]);
    const sgd = new SGD({ params: [["w", w]], lr: 0.5 });
    // The usual order (forward, backward, step) is fine, and gives w.grad = x for the step.
    gradScope(() => sum(mul(w, x)).backward());
    // A step between the forward and the backward would make mul's rule read the new w.
    assert.throws(
      () =>
        gradScope(() => {
          const loss = sum(mul(x, w));
          sgd.step();
          loss.backward();
        }),
      /^InPlaceModificationError: mul\.backward: its input 1 (w )?f32\[3\] was written 1 time\(s\) in place since the forward pass recorded the op.*before optimizer\.step\(\).*give the op a clone\(\)/,
    );
    // A kernel writing into an op's output, which its rule reads (exp's gradient is dy·y), is
    // caught too, through an alias as well (the version belongs to the buffer, as PyTorch's to
    // the storage). sum's rule needs only shapes: it saves nothing and does not object.
    assert.throws(
      () =>
        gradScope(() => {
          const y = exp(w);
          const loss = sum(y);
          fillBits(y.alias(), 0);
          loss.backward();
        }),
      /^InPlaceModificationError: exp\.backward: its output f32\[3\] was written 1 time\(s\).*write into a clone\(\) of the output/,
    );
    // Ops whose rules need only shapes (add, here) take writes into their inputs, as in PyTorch.
    const other = fromArray([1, 1, 1]);
    gradScope(() => {
      const loss = sum(add(w, other));
      fillBits(other, 0);
      loss.backward();
    });
    assert.deepEqual([...await w.grad!.toArray()], [5, 6, 7], "x from the first backward, plus ones");
    assert.deepEqual([...await w.toArray()], [-1, -0.5, 0], "the step ran: w - 0.5 * x");
    // The fix the error suggests: the op reads a clone, which the step leaves alone, and the
    // gradient flows through the clone back to w: w.grad = x + 1 (kept from above) + x.
    gradScope(() => {
      const loss = sum(mul(x, clone(w)));
      sgd.step();
      loss.backward();
    });
    assert.deepEqual([...await w.toArray()], [-3.5, -3.5, -3.5], "the step ran again: w - 0.5 * (x + 1)");
    assert.deepEqual([...await w.grad!.toArray()], [9, 11, 13]);
    sgd.disposeState();
    for (const t of [w, w.grad!, x, other]) t.dispose();
  },
);

gpuTest("backward: the in-place check covers what each rule reads, and only that", (gpu) => {
  const w = param([0.5, 1, 2]);
  const other = fromArray([1, 2, 3]);
  /** Whether a host write into `target` between the forward and the backward is refused. */
  const refused = (forward: () => Tensor, target: Tensor): boolean => {
    try {
      gradScope(() => {
        const loss = sum(forward());
        gpu.write(target.buffer, new Float32Array(target.size).fill(0.25));
        loss.backward();
      });
      return false;
    } catch (e) {
      if (e instanceof InPlaceModificationError) return true;
      throw e;
    }
  };
  // Rules that need only shapes save nothing (PyTorch saves nothing for them either).
  const shapesOnly: [string, () => Tensor][] = [
    ["add", () => add(w, other)],
    ["sub", () => sub(other, w)],
    ["neg", () => neg(w)],
    ["mulScalar", () => mulScalar(w, 3)],
    ["mean", () => mean(w)],
    ["slice", () => slice(w, [1], [2])],
    ["concat", () => concat([w, other], 0)],
    ["view", () => w.view([1, 3])],
    ["clone", () => clone(w)],
    ["exp (reads its output only)", () => exp(w)],
  ];
  for (const [name, forward] of shapesOnly) assert.equal(refused(forward, w), false, `${name}: write into w`);
  // Rules that read values refuse, also for tensors that are not inputs (u, v of spectral norm,
  // the masks of the RT input).
  const readsValues: [string, () => Tensor, Tensor][] = [
    ["mul", () => mul(w, other), other],
    ["relu", () => relu(w), w],
    ["log", () => log(w), w],
  ];
  for (const [name, forward, target] of readsValues) assert.equal(refused(forward, target), true, name);
  const weight = param([1, 2, 3, 4, 5, 6], [2, 3]);
  const [u, v] = [fromArray([0.6, 0.8]), fromArray([1, 0, 0])];
  assert.equal(refused(() => spectralNormalize(weight, u, v), u), true, "spectralNormalize: u");
  const image = param(Array.from({ length: 8 }, (_, i) => i / 8), [1, 2, 2, 2]);
  const masks = fromArray([1, 0, 1, 0], [1, 1, 2, 2]);
  assert.equal(refused(() => maskedInput(image, masks, null), masks), true, "maskedInput: masks");
  for (const t of [w, w.grad, other, weight, weight.grad, u, v, image, image.grad, masks]) t?.dispose();
});

gpuTest("backward: a freed saved tensor still gets the use-after-free message, not the in-place one", () => {
  const w = param([1, 2]);
  // The tidy frees the exps' outputs, which their rules read.
  assert.throws(
    () => gradScope(() => tidy(() => sum(exp(exp(w)))).backward()),
    (e: Error) =>
      e instanceof DisposedTensorError && /^exp\.backward: a tensor this op saved/.test(e.message),
  );
  w.grad?.dispose();
  w.dispose();
});
