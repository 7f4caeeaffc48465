import assert from "node:assert/strict";
import { sizeClass } from "../../src/device/buffer_pool.ts";
import { NoAdapterError } from "../../src/device/errors.ts";
import { spreadCpuDriverWork } from "../../src/device/gpu.ts";
import { readOnlyBindings } from "../../src/device/pipeline_cache.ts";
import { params } from "../../src/device/uniforms.ts";
import { add } from "../../src/ops/arithmetic.ts";
import { fromArray, zeros } from "../../src/ops/creation.ts";
import { launch } from "../../src/ops/kernel.ts";
import { tidy } from "../../src/tensor/scope.ts";
import { gpuTest } from "../helpers/setup.ts";

Deno.test("no adapter: a clear error that says how to fix it", async () => {
  // A backend this Linux machine lacks makes requestAdapter() return null, as on a machine
  // without GPU drivers or Mesa.
  const probe = `import { createGpu } from "${new URL("../../src/device/gpu.ts", import.meta.url)}";
    try { await createGpu({ quiet: true }); console.log("adapter found"); }
    catch (e) { console.log(e.name + ": " + e.message); }`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", probe],
    env: { DENO_WEBGPU_BACKEND: "metal", XDG_RUNTIME_DIR: "/tmp" },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.match(text, /NoAdapterError: No WebGPU adapter found \(DENO_WEBGPU_BACKEND=metal\)/);
  assert.match(text, /apt-get install mesa-vulkan-drivers/);
  assert.match(new NoAdapterError().message, /GPU: install or update its driver/);
});

Deno.test("CPU drivers get two worker threads per CPU, unless the user chose a number", () => {
  const saved = Deno.env.get("LP_NUM_THREADS");
  try {
    Deno.env.delete("LP_NUM_THREADS");
    spreadCpuDriverWork(2);
    assert.equal(Deno.env.get("LP_NUM_THREADS"), String(Math.min(32, 2 * navigator.hardwareConcurrency)));
    Deno.env.set("LP_NUM_THREADS", "3");
    spreadCpuDriverWork(2);
    assert.equal(Deno.env.get("LP_NUM_THREADS"), "3");
    Deno.env.delete("LP_NUM_THREADS");
    spreadCpuDriverWork(1);
    assert.equal(Deno.env.get("LP_NUM_THREADS"), undefined);
  } finally {
    if (saved === undefined) Deno.env.delete("LP_NUM_THREADS");
    else Deno.env.set("LP_NUM_THREADS", saved);
  }
});

gpuTest("adapter: fallback adapter is recognised and limits are raised past the defaults", (gpu) => {
  assert.equal(gpu.adapterClass, gpu.isFallbackAdapter ? "cpu" : "gpu");
  assert.ok(gpu.adapterName.length > 0);
  // WebGPU's default is 8 storage buffers per stage and 16 KiB of workgroup memory.
  assert.ok(gpu.limits.maxStorageBuffersPerShaderStage >= 8);
  assert.ok(gpu.limits.maxComputeWorkgroupStorageSize >= 16384);
  if (gpu.isFallbackAdapter) {
    assert.ok(gpu.limits.maxStorageBuffersPerShaderStage > 8, "requested the adapter's limits");
  }
});

Deno.test("buffer pool size classes: multiples of 256 B, then 8 classes per power of two", () => {
  assert.equal(sizeClass(1), 256);
  assert.equal(sizeClass(257), 512);
  assert.equal(sizeClass(65536), 65536);
  assert.equal(sizeClass(65537), 73728); // 64 KiB + 8 KiB
  for (const n of [70_000, 1_000_000, 123_456_789]) {
    const c = sizeClass(n);
    assert.ok(c >= n && c <= n * 1.125 + 256, `class ${c} for ${n}`);
  }
});

gpuTest("buffer pool: released buffers are reused and counters track bytes", (gpu) => {
  const before = gpu.memory();
  const t = zeros([1000]);
  const mid = gpu.memory();
  assert.equal(mid.bytesInUse - before.bytesInUse, sizeClass(4000));
  t.dispose();
  const after = gpu.memory();
  assert.equal(after.bytesInUse, before.bytesInUse);
  const u = zeros([1000]);
  assert.ok(gpu.memory().reuses > after.reuses, "the freed buffer was reused");
  u.dispose();
  assert.ok(gpu.memory().bytesAllocated >= gpu.memory().bytesInUse + gpu.memory().bytesPooled - 1);
});

gpuTest("encoder: dispatches are batched into few submits", async (gpu) => {
  await gpu.sync();
  const d0 = gpu.encoder.dispatches, s0 = gpu.encoder.submits;
  const x = zeros([64]);
  tidy(() => {
    let y = x;
    for (let i = 0; i < 100; i++) y = add(y, x);
  });
  await gpu.sync();
  const dispatches = gpu.encoder.dispatches - d0, submits = gpu.encoder.submits - s0;
  assert.ok(dispatches >= 100);
  assert.ok(submits <= Math.ceil(dispatches / gpu.tunables.dispatchesPerSubmit) + 1, `${submits} submits`);
  x.dispose();
});

Deno.test("pipeline cache: read-only bindings are parsed, and anything else counts as written", () => {
  const source = `
    @group(0) @binding(0) var<storage, read> a: array<f32>;
    @binding( 1 ) @group(0) var<storage,read_write> b: array<f32>;
    @group(0) @binding(2) var<uniform> p: Params;
    @group(0) @binding(3) var t: texture_2d<f32>;
    @group(0)
    @binding(4) var<storage> c: array<vec4<f32>>;
    @group(0) @binding(5) var<storage, read_write> d: array<atomic<u32>>;
    @group(0) @binding(6) var<storage,  read > e: array<f32>;`;
  // 1 (attributes in the other order, spaces in the parentheses) and 5 may be written.
  assert.deepEqual([...readOnlyBindings(source)].sort(), [0, 2, 3, 4, 6]);
  assert.deepEqual(
    [...readOnlyBindings("@group(0) @binding(0) var<storage, read_write> x: array<f32>;")],
    [],
  );
});

gpuTest(
  "buffer versions: a dispatch counts a write into its read_write bindings only; host writes count",
  (gpu) => {
    const a = fromArray([1, 2, 3]), b = fromArray([4, 5, 6]);
    const [va, vb] = [a.version, b.version];
    const sum = add(a, b); // reads a and b, writes its output
    assert.equal(a.version, va);
    assert.equal(b.version, vb);
    gpu.write(a.buffer, new Float32Array([7, 8, 9]));
    assert.equal(a.version, va + 1);
    const view = a.alias([1, 3]);
    assert.equal(view.version, a.version, "views share the count");
    for (const t of [a, b, sum, view]) t.dispose();
  },
);

gpuTest("pipeline cache: the same shader source compiles once", (gpu) => {
  const x = fromArray([1, 2, 3]);
  tidy(() => add(x, x));
  const compiled = gpu.pipelines.compiled;
  tidy(() => add(x, x));
  assert.equal(gpu.pipelines.compiled, compiled);
  x.dispose();
});

gpuTest(
  "validation errors surface at the next sync, naming the op that failed and the adapter",
  async (gpu) => {
    /** The error the next syncs throw. */
    const nextError = async () => {
      for (let i = 0; i < 20; i++) {
        try {
          await gpu.sync();
          await new Promise((r) => setTimeout(r, 10));
        } catch (e) {
          return e as Error;
        }
      }
      return null;
    };
    const x = fromArray([1, 2, 3]);
    // WebGPU reports these asynchronously, after the ops recorded next (here an add): the error
    // must still name the op that failed, not the last one recorded.
    const bad = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
    launch("broken_kernel", bad, [], [1]);
    tidy(() => add(x, x));
    const error = await nextError();
    assert.ok(error, "the shader error was reported");
    assert.match(error.message, /in op 'broken_kernel'/);
    assert.match(error.message, /parsing error/);
    assert.ok(error.message.includes(gpu.adapterName));
    // A bind group that does not match its layout (one binding of two).
    const twoBindings = `@group(0) @binding(0) var<storage, read_write> o: array<f32>;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@compute @workgroup_size(1) fn main() { o[0] = q[0]; }`;
    launch("one_binding_short", twoBindings, [x], [1]);
    tidy(() => add(x, x));
    const bindError = await nextError();
    assert.ok(bindError, "the bind group error was reported");
    assert.match(bindError.message, /in op 'one_binding_short'/);
    x.dispose();
  },
);

gpuTest("params: integers are range-checked", () => {
  assert.throws(() => params().u32(-1), /not a u32/);
  assert.throws(() => params().i32(2 ** 31), /not an i32/);
  assert.equal(params().u32(1).f32(0.5).bytes().byteLength, 16);
});

gpuTest("readback: staging buffers do not pile up as reads grow, and memory() counts them", async (gpu) => {
  let largest = 0;
  for (let k = 1; k <= 30; k++) {
    const t = zeros([k * 20_000]); // up to 2.4 MB: larger than any read before in this file
    assert.equal((await t.toArray()).length, k * 20_000);
    largest = k * 80_000;
    t.dispose();
  }
  const { stagingBytes } = gpu.memory();
  assert.ok(stagingBytes >= largest, `the last read's buffer is kept: ${stagingBytes} bytes`);
  assert.ok(
    stagingBytes <= 2 * largest,
    `${stagingBytes} bytes of staging kept after reads of at most ${largest}`,
  );
});
