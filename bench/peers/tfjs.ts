/**
 * Peer benchmark: TensorFlow.js 4.22 with its WebGPU backend, in this Deno process, on the same
 * adapter our engine uses. Rows carry the same `name` and work counts as ours (./workloads.ts),
 * so the two implementations pair up as ratios.
 *
 * Run standalone: `XDG_RUNTIME_DIR=/tmp deno run -A bench/peers/tfjs.ts [--json] [filter...]`
 * (`--json` prints the rows as one JSON array on stdout; filters keep rows whose name contains one).
 *
 * Deno needs no shims for tfjs: Deno resolves the packages' `main` (the CommonJS Node builds),
 * tfjs-core sees a Node-like platform (Deno's Node compatibility provides `process`, `util`, and
 * `fetch` is only used for model loading, not here), and tfjs-backend-webgpu needs only
 * `navigator.gpu`. It reads `adapter.info` (Deno has it) and falls back to the removed
 * `requestAdapterInfo()` only when `info` is missing; it touches `document` only with the
 * WEBGPU_USE_PROFILE_TOOL flag and `OffscreenCanvas` only for canvas/video inputs, neither used here.
 * tfjs-backend-cpu comes in transitively (the WebGPU backend reuses its CPU kernels for tiny
 * tensors whose data is still on the CPU: the WEBGPU_CPU_FORWARD flag, left at its default).
 *
 * One catch: tfjs-core's Node build registers no gradients (the `@tensorflow/tfjs` union package
 * does that by importing `tfjs-core/dist/register_all_gradients`), and that ESM file cannot be
 * imported by Deno directly (its relative imports have no ".js" extension). `registerGradients`
 * bundles it with esbuild (already a project dependency) and imports the bundle: it registers
 * the gradient configs in tfjs's global registry, which the engine of the Node build reads.
 *
 * tfjs is imported lazily inside `benchTfjs`, so importing this module costs nothing. tfjs creates
 * its own adapter and device (separate from our engine's), and `benchTfjs` tears its backend down
 * at the end, so it can run in the same process before or after our benchmarks.
 */
import type { BenchRow } from "../harness.ts";
import { rate, timeCalls, type TimeOptions } from "../harness.ts";
import { CONV, WORK } from "./workloads.ts";
import type * as TfCore from "@tensorflow/tfjs-core";
import type { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";

type Tf = typeof TfCore;
type Tensor = TfCore.Tensor;
type Tensor4D = TfCore.Tensor4D;

/**
 * Waits until all work tfjs has recorded so far has finished on the GPU: end its open compute
 * pass, submit its pending command encoder (tfjs batches 15 dispatches per submit), then wait for
 * the queue. This is what `tensor.data()` does before its readback, minus the copy and the map.
 */
async function syncTfjs(tf: Tf): Promise<void> {
  const backend = tf.backend() as unknown as WebGPUBackend;
  backend.ensureCommandEncoderReady();
  backend.endComputePassEncoder();
  backend.submitQueue();
  await backend.device.queue.onSubmittedWorkDone();
}

/** Mean ms per call of `fn`, timed like ours; `fn` runs inside `tf.tidy`, so its tensors are freed. */
function timeTfjs(tf: Tf, fn: () => void, options: TimeOptions = {}): Promise<number> {
  // Return nothing from the tidy callback, so tidy disposes everything.
  return timeCalls(() => tf.tidy(() => void fn()), () => syncTfjs(tf), options);
}

let loaded: Promise<Tf> | null = null;

/** Imports tfjs-core, the WebGPU backend (which registers its factory) and the gradients, once. */
function loadTfjs(): Promise<Tf> {
  loaded ??= (async () => {
    const tf: Tf = await import("@tensorflow/tfjs-core");
    await import("@tensorflow/tfjs-backend-webgpu");
    await registerGradients();
    return tf;
  })();
  return loaded;
}

/**
 * Registers tfjs's gradient functions (see the header): bundle tfjs-core's ESM
 * `dist/register_all_gradients.js` (and the ESM ops it uses) into one module and import it from a
 * data: URL. The bundled ops are a second copy of tfjs-core's op code, but tfjs keeps its engine,
 * kernel and gradient registries in globals, so both copies run on the one engine.
 */
async function registerGradients(): Promise<void> {
  const esbuild = await import("esbuild");
  const coreMain = new URL(import.meta.resolve("@tensorflow/tfjs-core")); // .../dist/tf-core.node.js
  const entry = new URL("register_all_gradients.js", coreMain).pathname;
  try {
    const result = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      format: "esm",
      platform: "neutral",
      write: false,
      logLevel: "error",
    });
    const code = result.outputFiles[0].text;
    const bytes = new TextEncoder().encode(code);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    await import(`data:text/javascript;base64,${btoa(binary)}`);
  } finally {
    await esbuild.stop(); // its service process would keep Deno alive
  }
}

/** Heavy workloads (seconds per call on lavapipe): one warm-up, a few timed calls. */
const HEAVY: TimeOptions = { warmup: 1, iters: 2, minMs: 300 };

/** Training-mode batchnorm over N, H, W of an NHWC tensor (statistics of this batch). */
function batchNormTrain(tf: Tf, x: Tensor4D, gamma: Tensor, beta: Tensor): Tensor4D {
  const { mean, variance } = tf.moments(x, [0, 1, 2]);
  return tf.batchNorm(x, mean, variance, beta, gamma, 1e-5) as Tensor4D;
}

/** A trainable variable holding `init` (the variable shares its data; the init tensor is freed). */
function variableOf(tf: Tf, init: Tensor): TfCore.Variable {
  const v = tf.variable(init);
  init.dispose();
  return v;
}

/** He-normal initialised conv weights, tfjs layout [kh, kw, in, out]. */
function convWeight(tf: Tf, k: number, cin: number, cout: number): TfCore.Variable {
  return variableOf(tf, tf.randomNormal([k, k, cin, cout], 0, Math.sqrt(2 / (k * k * cin))));
}

/**
 * ResNet-8 for CIFAR: conv3x3(3->16)+BN+ReLU, three BasicBlocks (16, 32, 64 channels; stride 1, 2,
 * 2; a 1x1 conv + BN projection shortcut where the shape changes), global average pool, dense 10.
 * Convs have no bias (BN follows); 3x3 convs pad 1 on every side (like PyTorch, not tfjs "same",
 * which pads stride-2 convs only at the bottom/right). BN uses batch statistics (training mode);
 * running averages are not tracked (a handful of 16-64 element ops, negligible).
 */
function makeResNet8(tf: Tf) {
  const bn = (c: number) => ({
    gamma: variableOf(tf, tf.ones([c])),
    beta: variableOf(tf, tf.zeros([c])),
  });
  const block = (cin: number, cout: number, stride: number) => ({
    stride,
    w1: convWeight(tf, 3, cin, cout),
    bn1: bn(cout),
    w2: convWeight(tf, 3, cout, cout),
    bn2: bn(cout),
    shortcut: stride !== 1 || cin !== cout ? { w: convWeight(tf, 1, cin, cout), bn: bn(cout) } : null,
  });
  const stem = { w: convWeight(tf, 3, 3, 16), bn: bn(16) };
  const blocks = [block(16, 16, 1), block(16, 32, 2), block(32, 64, 2)];
  const dense = {
    w: variableOf(tf, tf.randomNormal([64, 10], 0, Math.sqrt(1 / 64))),
    b: variableOf(tf, tf.zeros([10])),
  };

  type Bn = ReturnType<typeof bn>;
  const convBn = (x: Tensor4D, w: Tensor, norm: Bn, stride: number, pad: number) =>
    batchNormTrain(tf, tf.conv2d(x, w as Tensor4D, stride, pad), norm.gamma, norm.beta);

  const logits = (images: Tensor4D): Tensor => {
    let x = tf.relu(convBn(images, stem.w, stem.bn, 1, 1));
    for (const b of blocks) {
      const h = tf.relu(convBn(x, b.w1, b.bn1, b.stride, 1));
      const y = convBn(h, b.w2, b.bn2, 1, 1);
      const skip = b.shortcut ? convBn(x, b.shortcut.w, b.shortcut.bn, b.stride, 0) : x;
      x = tf.relu(tf.add(y, skip));
    }
    const pooled = tf.mean(x, [1, 2]); // global average pool: [64, 64]
    return tf.add(tf.matMul(pooled, dense.w), dense.b);
  };
  return { logits };
}

export interface BenchTfjsOptions {
  /** Keep only rows whose name contains one of these strings (all rows when empty). */
  only?: string[];
  /** Log the adapter tfjs got (default true). */
  verbose?: boolean;
}

/** Runs the tfjs-webgpu peer benchmarks; rows have impl "tfjs-webgpu". */
export async function benchTfjs(options: BenchTfjsOptions = {}): Promise<BenchRow[]> {
  const { only = [], verbose = true } = options;
  const wanted = (name: string) => only.length === 0 || only.some((s) => name.includes(s));
  const log = (line: string) => verbose && console.error(line);

  const tf = await loadTfjs();
  if (!(await tf.setBackend("webgpu"))) {
    throw new Error("tfjs: the webgpu backend failed to initialise (is navigator.gpu available?)");
  }
  await tf.ready();
  const backend = tf.backend() as unknown as WebGPUBackend;
  const info = backend.device.adapterInfo;
  log(
    `tfjs ${tf.version_core} webgpu adapter: ${info.description || info.vendor} ` +
      `(vendor ${info.vendor}, fallback ${info.isFallbackAdapter})`,
  );

  const impl = "tfjs-webgpu";
  const rows: BenchRow[] = [];
  const report = (row: BenchRow, note = "") => {
    log(`  ${row.name.padEnd(40)} ${row.msPerIter.toFixed(2).padStart(9)} ms  ${rate(row)}  ${note}`);
    rows.push(row);
  };
  const bench = async (
    work: { name: string; flop?: number; bytes?: number; items?: number },
    fn: () => void,
    time: TimeOptions = {},
  ) => {
    if (wanted(work.name)) report({ ...work, impl, msPerIter: await timeTfjs(tf, fn, time) });
  };
  const keep: Tensor[] = []; // inputs, disposed at the end
  const input = <T extends Tensor>(t: T): T => (keep.push(t), t);

  try {
    // Matmul
    for (const [n, work] of [[512, WORK.matmul512], [1024, WORK.matmul1024]] as const) {
      if (!wanted(work.name)) continue;
      const a = input(tf.randomNormal([n, n]));
      const b = input(tf.randomNormal([n, n]));
      await bench(work, () => tf.matMul(a, b));
    }

    // Conv 3x3, stride 1, pad "same" (= pad 1): x [N, H, W, C] (NHWC, tfjs's layout), w [3, 3, Cin, Cout].
    const { batch, channels: c, size: s, kernel: k } = CONV;
    const xShape: [number, number, number, number] = [batch, s, s, c];
    const x = input(tf.randomNormal(xShape) as Tensor4D);
    const w = input(tf.randomNormal([k, k, c, c], 0, Math.sqrt(2 / (k * k * c))) as Tensor4D);
    const dy = input(tf.randomNormal(xShape) as Tensor4D);
    await bench(WORK.convForward, () => tf.conv2d(x, w, 1, "same"), HEAVY);
    // dx = transposed conv of dy: the Conv2DBackpropInput kernel, as conv2d's gradient calls it.
    await bench(
      WORK.convBackwardData,
      () => tf.conv2dTranspose(dy, w, xShape, 1, "same"),
      HEAVY,
    );
    // dW: tfjs-core does not export conv2DBackpropFilter, so run its kernel through the engine
    // (exactly what conv2d's gradient does). tfjs's WebGPU dW is naive (one invocation per weight,
    // looping over batch x rows x columns) and takes about a minute here, so it is timed once.
    // The warm-up (pipeline compilation) runs on batch 2: tfjs keys pipelines by input ranks,
    // dtypes and broadcast dimensions (makeShaderKey), and batch 1 would make dimension 0 a
    // broadcast one (another pipeline); batch 2 compiles the same one in a fraction of the time.
    if (wanted(WORK.convBackwardFilter.name)) {
      const attrs = { strides: 1, pad: "same", dataFormat: "NHWC", filterShape: [k, k, c, c] };
      const backwardFilter = (xs: Tensor, dys: Tensor) =>
        tf.engine().runKernel("Conv2DBackpropFilter", { x: xs, dy: dys }, attrs);
      tf.tidy(() => {
        backwardFilter(tf.slice(x, 0, 2), tf.slice(dy, 0, 2));
      });
      await syncTfjs(tf);
      await bench(WORK.convBackwardFilter, () => backwardFilter(x, dy), {
        warmup: 0,
        iters: 1,
        minMs: 0,
        rounds: 1,
      });
    }

    // Batchnorm, training mode (batch statistics over N, H, W).
    const gamma = input(tf.randomUniform([c], 0.5, 1.5));
    const beta = input(tf.randomNormal([c]));
    const bnForward = () => batchNormTrain(tf, x, gamma, beta);
    if (wanted(WORK.batchnormForward.name) || wanted(WORK.batchnormBackward.name)) {
      const forwardMs = await timeTfjs(tf, bnForward, HEAVY);
      if (wanted(WORK.batchnormForward.name)) {
        report({ ...WORK.batchnormForward, impl, msPerIter: forwardMs });
      }
      if (wanted(WORK.batchnormBackward.name)) {
        // tfjs has no separate backward call: tf.grads runs the forward and then the backward
        // (gradients for x, gamma, beta through batchNorm and moments), so backward time =
        // (forward + backward) - forward, both timed here with the same sync.
        const bnGrads = tf.grads((xx, g, b) => batchNormTrain(tf, xx as Tensor4D, g, b));
        const bothMs = await timeTfjs(tf, () => bnGrads([x, gamma, beta], dy), HEAVY);
        report(
          { ...WORK.batchnormBackward, impl, msPerIter: Math.max(bothMs - forwardMs, 1e-3) },
          `(fwd+bwd ${bothMs.toFixed(2)} ms - fwd ${forwardMs.toFixed(2)} ms)`,
        );
      }
    }

    // ResNet-8 training step: forward, softmax cross-entropy, backward, SGD momentum 0.9.
    if (wanted(WORK.resnet8Step.name)) {
      const model = makeResNet8(tf);
      const images = input(tf.randomNormal([64, 32, 32, 3]) as Tensor4D);
      const labels = input(tf.tidy(() => tf.oneHot(tf.tensor1d(randomLabels(64, 10), "int32"), 10)));
      const optimizer = tf.train.momentum(0.01, 0.9);
      const loss = () => tf.losses.softmaxCrossEntropy(labels, model.logits(images)) as TfCore.Scalar;
      // Sanity check: the warm-up step and one step after the timed ones read their loss back;
      // training on one fixed batch, it must go down.
      const lossValue = async () => {
        const value = optimizer.minimize(loss, true)!;
        const [v] = await value.data();
        value.dispose();
        return v;
      };
      try {
        const before = await lossValue();
        await bench(WORK.resnet8Step, () => optimizer.minimize(loss), { warmup: 0, iters: 2, minMs: 300 });
        const after = await lossValue();
        log(`  resnet8 loss on the fixed batch: ${before.toFixed(4)} -> ${after.toFixed(4)}`);
        if (!(after < before)) log("  WARNING: resnet8 loss did not decrease");
      } finally {
        optimizer.dispose();
        // MomentumOptimizer.dispose() forgets its parent's learning-rate scalar (tfjs 4.22 bug).
        (optimizer as unknown as { c?: Tensor }).c?.dispose();
      }
    }
  } finally {
    for (const t of keep) t.dispose();
    tf.disposeVariables();
    await syncTfjs(tf);
    const leaked = tf.memory().numTensors;
    if (leaked > 0) log(`tfjs: ${leaked} tensors still alive after the benchmark`);
    // Tear the backend down (frees its pooled GPU buffers), then destroy its device. The backend
    // factory stays registered, so a later benchTfjs() creates a fresh adapter and device.
    tf.engine().reset();
    backend.device.destroy();
  }
  return rows;
}

/** Deterministic class labels (tfjs's RNG is not what we benchmark). */
function randomLabels(n: number, classes: number): Int32Array {
  const labels = new Int32Array(n);
  let state = 12345;
  for (let i = 0; i < n; i++) {
    state = (state * 1103515245 + 12345) % 2147483648;
    labels[i] = state % classes;
  }
  return labels;
}

if (import.meta.main) {
  const json = Deno.args.includes("--json");
  const only = Deno.args.filter((a) => !a.startsWith("--"));
  const start = performance.now();
  const rows = await benchTfjs({ only, verbose: true });
  if (json) {
    console.log(JSON.stringify(rows));
  } else {
    console.log(`\n${"benchmark".padEnd(40)} ${"ms/iter".padStart(10)}  rate (tfjs-webgpu)`);
    for (const row of rows) {
      console.log(`${row.name.padEnd(40)} ${row.msPerIter.toFixed(2).padStart(10)}  ${rate(row)}`);
    }
    console.log(`total ${((performance.now() - start) / 1000).toFixed(1)} s`);
  }
}
