import assert from "node:assert/strict";
import { gradScope } from "../../src/autograd/backward.ts";
import { createModel, MODELS, parseNormalization } from "../../src/models/zoo.ts";
import { fromArray } from "../../src/ops/creation.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { manualSeed, rand } from "../../src/ops/random.ts";
import { tidy } from "../../src/tensor/scope.ts";
import { gpuTest } from "../helpers/setup.ts";

gpuTest("models: PyTorch-style dotted names for parameters and buffers", async () => {
  const m = createModel("resnet8", { inChannels: 3, numClasses: 10, dataset: "cifar10" });
  const names = Object.keys(m.stateDict());
  for (
    const n of [
      "conv1.weight",
      "bn1.weight",
      "bn1.running_mean",
      "bn1.running_var",
      "layer1.0.conv1.weight",
      "layer1.0.bn2.bias",
      "layer2.0.shortcut.0.weight",
      "layer2.0.shortcut.1.running_var",
      "linear.weight",
      "linear.bias",
    ]
  ) assert.ok(names.includes(n), `${n} in ${names.join(", ")}`);
  assert.ok(!names.includes("layer1.0.shortcut.0.weight"), "identity shortcut has no conv");
  assert.ok(m.namedParameters().every(([, t]) => t.requiresGrad));
  assert.ok(m.namedBuffers().every(([, t]) => !t.requiresGrad));
  m.dispose();

  const w = createModel("wrn-28-10", { inChannels: 3, numClasses: 10, dataset: "cifar10" });
  const wn = Object.keys(w.stateDict());
  for (
    const n of [
      "conv1.weight",
      "block1.layer.0.bn1.weight",
      "block1.layer.0.convShortcut.weight",
      "block3.layer.3.conv2.weight",
      "bn1.running_mean",
      "fc.weight",
    ]
  ) {
    assert.ok(wn.includes(n), n);
  }
  // Published sizes: WRN-28-10 has 36,479,194 parameters (RobustBench); kuangliu's ResNet-18 11,173,962.
  assert.equal(w.parameterCount(), 36_479_194);
  // RobustBench's init: convs N(0, 2/(k²·out)), the fc bias at 0. A 160 -> 160 3x3 conv: std
  // 0.037 (PyTorch's default U(±1/√fan_in) gives 0.015).
  const conv = await w.stateDict()["block1.layer.0.conv2.weight"].toArray();
  const std = Math.sqrt(Array.from(conv).reduce((s, v) => s + v * v, 0) / conv.length);
  assert.ok(Math.abs(std - Math.sqrt(2 / (9 * 160))) < 0.002, `block1.layer.0.conv2 weight std ${std}`);
  assert.deepEqual([...await w.stateDict()["fc.bias"].toArray()], new Array(10).fill(0));
  w.dispose();
  const r18 = createModel("resnet18", { inChannels: 3, numClasses: 10, dataset: "cifar10" });
  assert.equal(r18.parameterCount(), 11_173_962);
  r18.dispose();
});

gpuTest("models: unknown names get one clear error", () => {
  assert.throws(
    () => createModel("resnet9000", { inChannels: 3, numClasses: 10, dataset: "cifar10" }),
    /unknown model 'resnet9000'; choose one of: small-cnn, resnet8/,
  );
  assert.throws(
    () => createModel("resnet8", { inChannels: 3, numClasses: 10, dataset: "imagenet-21k" }),
    /unknown dataset/,
  );
});

gpuTest(
  "models: --normalize for imported weights (none, a dataset, mean/std), instead of the dataset's",
  async () => {
    assert.deepEqual(parseNormalization("none"), { mean: [0], std: [1] });
    assert.deepEqual(parseNormalization("cifar10").std, [0.2470, 0.2435, 0.2616]);
    assert.deepEqual(parseNormalization("0.5,0.4,0.3/0.2,0.25,0.3"), {
      mean: [0.5, 0.4, 0.3],
      std: [0.2, 0.25, 0.3],
    });
    for (const bad of ["", "0.5/0", "0.5,0.4/0.2", "x/y", "0.5", "imagenet"]) {
      assert.throws(() => parseNormalization(bad, "--normalize"), /--normalize: expected none, one of/, bad);
    }
    // The same weights (one seed) see (x − mean) / std with the given statistics, not the dataset's.
    const logits = async (normalize?: { mean: number[]; std: number[] }, dataset = "cifar10") => {
      manualSeed(5);
      const m = createModel("resnet8", { inChannels: 3, numClasses: 10, dataset, normalize });
      m.eval();
      manualSeed(6);
      const x = rand([2, 3, 8, 8]);
      const y = await tidy(() => m.forward(x)).toArray();
      x.dispose();
      m.dispose();
      return Array.from(y);
    };
    const raw = await logits(parseNormalization("none"));
    assert.deepEqual(raw, await logits(undefined, "none"));
    assert.notDeepEqual(raw, await logits(undefined, "cifar10"));
    assert.throws(
      () =>
        createModel("resnet8", {
          inChannels: 3,
          numClasses: 10,
          dataset: "cifar10",
          normalize: { mean: [0, 0], std: [1, 1] },
        }),
      /normalisation has 2 values for 3 input channels/,
    );
  },
);

for (const name of Object.keys(MODELS)) {
  gpuTest(`models: ${name} forward shape, and a backward pass reaches every parameter`, async () => {
    manualSeed(3);
    const big = name === "wrn-28-10" ||
      name.startsWith("resnet") && name !== "resnet8" && name !== "resnet20";
    const [inChannels, size] = big ? [3, 16] : [1, 28];
    const m = createModel(name, { inChannels, numClasses: 7, dataset: big ? "cifar10" : "fashion-mnist" });
    const x = rand([2, inChannels, size, size], { seed: 1 });
    const y = fromArray(new Int32Array([1, 5]));
    const logits = tidy(() => m.forward(x));
    assert.deepEqual(logits.shape, [2, 7]);
    const values = await logits.toArray();
    assert.ok(values.every(Number.isFinite), "finite logits");
    gradScope(() => crossEntropy(m.forward(x), y).backward());
    for (const [n, p] of m.namedParameters()) {
      assert.ok(p.grad, `${name}: ${n} received a gradient`);
      assert.deepEqual(p.grad.shape, p.shape);
    }
    m.eval();
    const evalLogits = tidy(() => m.forward(x));
    assert.ok((await evalLogits.toArray()).every(Number.isFinite));
    for (const t of [x, y, logits, evalLogits]) t.dispose();
    m.dispose();
  });
}
