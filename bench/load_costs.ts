/**
 * What one vec4 load costs on this adapter, by the memory it reads: a storage buffer, a uniform
 * buffer, workgroup memory or a texture (textureLoad). Each invocation does `--loads` dependent
 * loads at scattered (divergent) addresses; the table gives ns per load per invocation.
 *
 * Why: on CPU adapters (llvmpipe) a kernel's speed is set by its loads far more than by its FMAs,
 * and the memory kinds compile very differently: a storage load becomes a loop over the SIMD lanes
 * with a bounds check and a branch per component (seen in the JIT code with gdb), a uniform load
 * a gather without branches. Measured on lavapipe (Mesa 22.3, 2 cores) on 2026-12-05, sources in
 * L1: storage 0.9-1.1, uniform 0.5, workgroup 0.5-0.6, texture 0.7-0.8 ns per vec4 load per
 * invocation, i.e. a storage vec4 load costs ~50 cycles per 8-lane SIMD group, as much as a dozen
 * vec4 FMAs. The "same address" rows read one address in every lane of a workgroup (derived from
 * workgroup_id): they cost the same, so lavapipe does not scalarise such loads.
 *
 *   XDG_RUNTIME_DIR=/tmp deno run -A bench/load_costs.ts [--loads 256] [--rounds 3]
 */
import { parseArgs } from "node:util";
import { currentGpu, initWebGpu } from "../src/device/runtime.ts";

const { values } = parseArgs({
  options: { loads: { type: "string", default: "256" }, rounds: { type: "string", default: "3" } },
});
const LOADS = Number(values.loads);
/** Invocations per dispatch, and the vec4s each source holds (16 KiB: every source fits in L1). */
const INVOCATIONS = 65536, ELEMENTS = 1024, TEXTURE_WIDTH = 64;

await initWebGpu({ quiet: true });
const device = currentGpu().device;
const data = new Float32Array(ELEMENTS * 4).map((_, i) => (i % 97) * 0.01);
const storage = device.createBuffer({
  size: data.byteLength,
  usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
});
const uniform = device.createBuffer({
  size: data.byteLength,
  usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
});
const texture = device.createTexture({
  size: [TEXTURE_WIDTH, ELEMENTS / TEXTURE_WIDTH],
  format: "rgba32float",
  usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
});
device.queue.writeBuffer(storage, 0, data);
device.queue.writeBuffer(uniform, 0, data);
device.queue.writeTexture({ texture }, data, { bytesPerRow: TEXTURE_WIDTH * 16 }, [
  TEXTURE_WIDTH,
  ELEMENTS / TEXTURE_WIDTH,
]);
const out = device.createBuffer({ size: INVOCATIONS * 16, usage: GPUBufferUsage.STORAGE });

/** A kernel that sums LOADS vec4s read by `load(index)` at a scattered sequence of indices. */
function kernel(
  declaration: string,
  load: (index: string) => string,
  prologue = "",
  size = ELEMENTS,
  seed = "gid.x",
): string {
  return /* wgsl */ `
${declaration}
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(8)
fn main(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  var acc = vec4<f32>(0.0);
  ${prologue}
  var index = (${seed} * 2654435761u) % ${size}u;
  for (var k = 0u; k < ${LOADS}u; k++) {
    acc += ${load("index")};
    index = (index + 17u) % ${size}u;
  }
  out[gid.x] = acc;
}`;
}

interface Variant {
  name: string;
  code: string;
  resource: GPUBindingResource;
  /** The same kernel without the timed loads, when it has set-up work of its own. */
  baseline?: string;
}
/** Filling the workgroup tile is set-up work, timed in its own baseline and subtracted. */
const TILE = ELEMENTS;
const tileDeclaration = `@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
var<workgroup> tile: array<vec4<f32>, ${TILE}>;`;
// Fill the tile from storage (the 8 invocations of a workgroup share it) before the timed loads.
const tileFill = `for (var i = lid.x; i < ${TILE}u; i += 8u) { tile[i] = src[i]; }
  workgroupBarrier();`;
const noLoad = () => "vec4<f32>(f32(index))";

const variants: Variant[] = [
  {
    name: "storage",
    code: kernel("@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;", (i) => `src[${i}]`),
    resource: { buffer: storage },
  },
  {
    // Every lane of a workgroup reads the same address (derived from workgroup_id only).
    name: "storage, same address in the workgroup",
    code: kernel(
      "@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;",
      (i) => `src[${i}]`,
      "",
      ELEMENTS,
      "wid.x",
    ),
    resource: { buffer: storage },
  },
  {
    name: "uniform",
    code: kernel(
      `@group(0) @binding(0) var<uniform> src: array<vec4<f32>, ${ELEMENTS}>;`,
      (i) => `src[${i}]`,
    ),
    resource: { buffer: uniform },
  },
  {
    name: "uniform, same address in the workgroup",
    code: kernel(
      `@group(0) @binding(0) var<uniform> src: array<vec4<f32>, ${ELEMENTS}>;`,
      (i) => `src[${i}]`,
      "",
      ELEMENTS,
      "wid.x",
    ),
    resource: { buffer: uniform },
  },
  {
    name: "workgroup",
    code: kernel(tileDeclaration, (i) => `tile[${i}]`, tileFill, TILE),
    resource: { buffer: storage },
    baseline: kernel(tileDeclaration, noLoad, tileFill + " acc += tile[lid.x];", TILE),
  },
  {
    name: "texture",
    code: kernel(
      "@group(0) @binding(0) var src: texture_2d<f32>;",
      (i) => `textureLoad(src, vec2<u32>(${i} % ${TEXTURE_WIDTH}u, ${i} / ${TEXTURE_WIDTH}u), 0)`,
    ),
    resource: texture.createView(),
  },
];

/** The same dispatch without loads: its time (index arithmetic, stores) is subtracted. */
const baseline = kernel("", noLoad);

async function timeKernel(code: string, resource?: GPUBindingResource): Promise<number> {
  device.pushErrorScope("validation");
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
  });
  const error = await device.popErrorScope();
  if (error) throw new Error(`load_costs: a kernel did not compile: ${error.message}`);
  const entries: GPUBindGroupEntry[] = [{ binding: 1, resource: { buffer: out } }];
  if (resource) entries.push({ binding: 0, resource });
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  const run = async (repeats: number) => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    for (let r = 0; r < repeats; r++) pass.dispatchWorkgroups(INVOCATIONS / 8);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  await run(1);
  // Two batch sizes: their difference cancels the fixed cost of a submit and its wait.
  let t0 = performance.now();
  await run(4);
  const short = performance.now() - t0;
  t0 = performance.now();
  await run(24);
  return (performance.now() - t0 - short) / 20;
}

console.log(
  `ns per vec4 load per invocation (${LOADS} loads, ${INVOCATIONS} invocations), best of ${values.rounds}:`,
);
const best = new Map<string, number>();
for (let round = 0; round < Number(values.rounds); round++) {
  const base = await timeKernel(baseline);
  for (const v of variants) {
    const own = v.baseline ? await timeKernel(v.baseline, v.resource) : base;
    const ns = ((await timeKernel(v.code, v.resource)) - own) * 1e6 / (INVOCATIONS * LOADS);
    best.set(v.name, Math.min(best.get(v.name) ?? Infinity, ns));
  }
}
for (const [name, ns] of best) console.log(`  ${name.padEnd(40)} ${ns.toFixed(2)} ns`);
