/**
 * Where the time of one training step goes, dispatch by dispatch.
 *
 * WebGPU on CPU adapters has no timestamp queries, so this records every dispatch of one step
 * (op label, shader, bindings, grid), then replays each one alone `--repeat` times between two
 * syncs and reports its mean time. The replayed kernels read whatever the buffers hold by then:
 * the times are right, the values are not used. Workloads:
 *   train     one SGD step of a classifier (default: ResNet-8, batch 64, 32x32x3, as the bench);
 *   pipeline  one attack gradient through RT2 -> coarse generator -> classifier, the inner step
 *             of the study's evaluation (Fashion-MNIST sizes: --size 28 --channels 1 --batch 100).
 *
 * Kernel experiments: `--dump DIR` writes every dispatch's WGSL source to DIR/<#>_<op>_<id>.wgsl;
 * `--try 17=file.wgsl` (repeatable) replays dispatch #17 once more with that source instead, on
 * the same bindings and grid, and prints both times (the edited shader must keep the bindings).
 *
 *   XDG_RUNTIME_DIR=/tmp deno run -A bench/profile_step.ts [--workload train] [--model resnet8] [--top 25] [--all]
 */
import { parseArgs } from "node:util";
import { grad, gradScope } from "../src/autograd/backward.ts";
import type { Binding } from "../src/device/gpu.ts";
import { currentGpu, initWebGpu } from "../src/device/runtime.ts";
import { createModel } from "../src/models/zoo.ts";
import { fromArray } from "../src/ops/creation.ts";
import { crossEntropy } from "../src/ops/loss.ts";
import { manualSeed, rand } from "../src/ops/random.ts";
import { SGD } from "../src/optim/mod.ts";
import { createPurifier, PurifiedClassifier } from "../src/purify/pipeline.ts";
import { RandomTransform } from "../src/purify/transforms.ts";
import { perSampleCrossEntropy } from "../src/attacks/losses.ts";
import { sum } from "../src/ops/reduce.ts";
import { timeGpu } from "./harness.ts";

interface Recorded {
  op: string;
  source: string;
  bindings: Binding[];
  workgroups: readonly number[];
  entryPoint: string;
}

const { values } = parseArgs({
  options: {
    workload: { type: "string", default: "train" },
    model: { type: "string", default: "resnet8" },
    width: { type: "string", default: "8" },
    batch: { type: "string", default: "64" },
    size: { type: "string", default: "32" },
    channels: { type: "string", default: "3" },
    repeat: { type: "string", default: "40" },
    top: { type: "string", default: "30" },
    /** Also list every dispatch in step order. */
    all: { type: "boolean", default: false },
    dump: { type: "string" },
    try: { type: "string", multiple: true, default: [] },
  },
});
const batch = Number(values.batch), size = Number(values.size), inChannels = Number(values.channels);

await initWebGpu({ quiet: true });
const gpu = currentGpu();
manualSeed(1);
const model = createModel(values.model!, { inChannels, numClasses: 10, dataset: "none" });
const optimizer = new SGD({ params: model.namedParameters(), lr: 0.01, momentum: 0.9 });
const x = rand([batch, inChannels, size, size], { seed: 2 });
const y = fromArray(Int32Array.from({ length: batch }, (_, i) => i % 10));
let step: () => void;
if (values.workload === "train") {
  model.train();
  step = () => {
    optimizer.zeroGrad();
    gradScope(() => crossEntropy(model.forward(x), y).backward());
    optimizer.step();
  };
} else if (values.workload === "pipeline") {
  model.eval();
  const generator = createPurifier({ kind: "coarse", width: Number(values.width) }, inChannels);
  const transform = new RandomTransform({ kind: "rt2", grid: 4, missing: 0.25, sigma: 0.25 });
  const defence = new PurifiedClassifier(transform, generator, model);
  step = () => grad((input) => sum(perSampleCrossEntropy(defence.logits(input), y)), [x]).grads[0].dispose();
} else {
  throw new Error(`unknown workload '${values.workload}' (train or pipeline)`);
}

const stepMs = await timeGpu(step, { warmup: 2, iters: 6, minMs: 1500, keepOperandCopies: true });

// Record one step's dispatches (they still run, so the pool and the tape behave as usual).
const recorded: Recorded[] = [];
const dispatch = gpu.dispatch.bind(gpu);
gpu.dispatch = (op, source, bindings, workgroups, entryPoint = "main") => {
  recorded.push({ op, source, bindings, workgroups, entryPoint });
  dispatch(op, source, bindings, workgroups, entryPoint);
};
step();
gpu.dispatch = dispatch;
await gpu.sync();

/** A short name of a shader: its first `fn`-level comment or entry point, plus a hash. */
function shaderId(source: string): string {
  let h = 0;
  for (let i = 0; i < source.length; i++) h = (h * 31 + source.charCodeAt(i)) | 0;
  return (h >>> 0).toString(16).padStart(8, "0").slice(0, 6);
}

/**
 * The cost of one sync with nothing to wait for (Deno's onSubmittedWorkDone polls: ~10 ms on
 * lavapipe). It is subtracted from every replay, or each dispatch would carry floor/repeat ms.
 */
async function syncFloor(): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < 8; i++) {
    const start = performance.now();
    await gpu.sync();
    best = Math.min(best, performance.now() - start);
  }
  return best;
}

/**
 * Mean ms of `repeat` back-to-back runs of one dispatch, after one warm-up, between two syncs,
 * less the sync floor.
 */
async function replay(r: Recorded, repeat: number, floor: number): Promise<number> {
  dispatch(r.op, r.source, r.bindings, r.workgroups, r.entryPoint);
  await gpu.sync();
  const start = performance.now();
  for (let i = 0; i < repeat; i++) dispatch(r.op, r.source, r.bindings, r.workgroups, r.entryPoint);
  await gpu.sync();
  return Math.max(0, performance.now() - start - floor) / repeat;
}

const repeat = Number(values.repeat);
const floor = await syncFloor();
const rows: { op: string; shader: string; grid: string; ms: number }[] = [];
for (const r of recorded) {
  rows.push({
    op: r.op,
    shader: shaderId(r.source),
    grid: r.workgroups.join("x"),
    ms: await replay(r, repeat, floor),
  });
}

if (values.dump) {
  Deno.mkdirSync(values.dump, { recursive: true });
  recorded.forEach((r, i) => {
    const name = `${String(i).padStart(3, "0")}_${r.op.replaceAll(".", "-")}_${shaderId(r.source)}.wgsl`;
    Deno.writeTextFileSync(`${values.dump}/${name}`, r.source);
  });
}
for (const spec of values.try!) {
  const [index, file] = spec.split("=");
  const r = recorded[Number(index)];
  if (!r || !file) {
    throw new Error(`--try ${spec}: expected <dispatch #>=<file.wgsl> with # < ${recorded.length}`);
  }
  const edited = { ...r, source: Deno.readTextFileSync(file) };
  const compileStart = performance.now();
  dispatch(edited.op, edited.source, edited.bindings, edited.workgroups, edited.entryPoint);
  await gpu.sync();
  const compileMs = performance.now() - compileStart;
  const base = await replay(r, repeat, floor), tried = await replay(edited, repeat, floor);
  const again = await replay(r, repeat, floor);
  console.log(
    `#${index} ${r.op}: as built ${base.toFixed(2)} / ${again.toFixed(2)} ms, ${file} ${
      tried.toFixed(2)
    } ms ` +
      `(first dispatch incl. compile ${compileMs.toFixed(0)} ms)`,
  );
}

const total = rows.reduce((s, r) => s + r.ms, 0);
const byOp = new Map<string, { ms: number; count: number }>();
for (const r of rows) {
  const e = byOp.get(r.op) ?? { ms: 0, count: 0 };
  e.ms += r.ms;
  e.count++;
  byOp.set(r.op, e);
}
console.log(
  `${values.workload} ${values.model} step, batch ${batch}, ${size}x${size}x${inChannels}: ${
    stepMs.toFixed(1)
  } ms ` +
    `(${(batch / stepMs * 1000).toFixed(0)} images/s), ${recorded.length} dispatches; ` +
    `replayed one by one they sum to ${total.toFixed(1)} ms (sync floor ${floor.toFixed(1)} ms subtracted)`,
);
console.log("\nby op label:");
for (const [op, e] of [...byOp].sort((a, b) => b[1].ms - a[1].ms)) {
  console.log(
    `  ${op.padEnd(32)} ${e.ms.toFixed(2).padStart(8)} ms  ${String(e.count).padStart(4)} dispatches`,
  );
}
console.log(`\nslowest ${values.top} dispatches (in step order: #):`);
const indexed = rows.map((r, i) => ({ ...r, i }));
for (const r of indexed.sort((a, b) => b.ms - a.ms).slice(0, Number(values.top))) {
  console.log(
    `  #${String(r.i).padStart(3)} ${r.op.padEnd(28)} ${r.shader} [${r.grid}] ${r.ms.toFixed(2)} ms`,
  );
}
if (values.all) {
  console.log("\nevery dispatch, in step order:");
  rows.forEach((r, i) => {
    console.log(
      `  #${String(i).padStart(3)} ${r.op.padEnd(28)} ${r.shader} [${r.grid}] ${r.ms.toFixed(2)} ms`,
    );
  });
}
