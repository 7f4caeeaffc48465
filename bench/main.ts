/**
 * `deno task bench`: our kernels and a ResNet-8 training step, side by side with TensorFlow.js
 * (WebGPU backend) on the same adapter, as ratios. Writes bench/RESULTS.md.
 *
 * Options: `--no-peer` (skip tfjs), `--only <substring>` (repeatable), `--out <path>`.
 */
import { parseArgs } from "node:util";
import { type BenchRow, rate } from "./harness.ts";
import { benchBatchnorm } from "./kernels/batchnorm.ts";
import { benchConv2d } from "./kernels/conv2d.ts";
import { benchMatmul } from "./kernels/matmul.ts";
import { benchResnet8Step } from "./kernels/resnet8.ts";
import { benchTfjs } from "./peers/tfjs.ts";
import { initWebGpu } from "../src/device/runtime.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "no-peer": { type: "boolean", default: false },
    only: { type: "string", multiple: true, default: [] },
    out: { type: "string", default: new URL("./RESULTS.md", import.meta.url).pathname },
  },
});
const wanted = (name: string) => values.only!.length === 0 || values.only!.some((s) => name.includes(s));
const log = (s: string) => console.error(s);

const gpu = await initWebGpu();
const adapter = `${gpu.adapterName} (${gpu.adapterClass === "cpu" ? "CPU fallback adapter" : "GPU"}, ` +
  `backend ${Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default"})`;
log(`adapter: ${adapter}`);

const ours: BenchRow[] = [];
for (
  const [label, run] of [
    ["matmul", benchMatmul],
    ["conv2d", benchConv2d],
    ["batchnorm", benchBatchnorm],
    ["resnet8", () => benchResnet8Step({ log })],
  ] as const
) {
  if (!wanted(label)) continue;
  log(`ours: ${label} ...`);
  ours.push(...(await run()).filter((r) => wanted(r.name) || wanted(label)));
}

let peer: BenchRow[] = [];
if (!values["no-peer"]) {
  log("tfjs-webgpu: running the same workloads ...");
  const names = ours.map((r) => r.name);
  peer = await benchTfjs({ only: names.length ? names : undefined });
}

const fmtMs = (ms: number) => ms >= 100 ? ms.toFixed(0) : ms.toFixed(2);
const lines = [
  "| workload | ours | ours ms | tfjs-webgpu | tfjs ms | speed-up vs tfjs |",
  "|---|---:|---:|---:|---:|---:|",
];
for (const row of ours) {
  const p = peer.find((q) => q.name === row.name);
  lines.push(
    `| ${row.name} | ${rate(row)} | ${fmtMs(row.msPerIter)} | ${p ? rate(p) : "—"} | ${
      p ? fmtMs(p.msPerIter) : "—"
    } | ${p ? (p.msPerIter / row.msPerIter).toFixed(1) + "×" : "—"} |`,
  );
}
const table = lines.join("\n");
console.log(table);

const command = `deno task bench${Deno.args.length ? " " + Deno.args.join(" ") : ""}`;
const report = `# Benchmark results

Produced by \`${command}\` on ${new Date().toISOString().slice(0, 10)}.

- Adapter: ${adapter}
- Machine: ${Deno.build.os}/${Deno.build.arch}, ${navigator.hardwareConcurrency} logical CPUs
- Peer: TensorFlow.js 4.22 with \`@tensorflow/tfjs-backend-webgpu\`, in the same Deno process, same adapter
- Rates: GFLOP/s (matmul 2·n³; conv 2·N·Cout·Ho·Wo·Cin·k²), GB/s of minimum traffic (batchnorm),
  images/s (training step). Speed-up = tfjs time / our time.

${table}
`;
if (values.only!.length === 0 && !values["no-peer"]) {
  await Deno.writeTextFile(values.out!, report);
  log(`wrote ${values.out}`);
} else {
  log("(partial run: bench/RESULTS.md not rewritten)");
}
