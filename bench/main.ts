/**
 * `deno task bench`: our kernels and a ResNet-8 training step, side by side with TensorFlow.js
 * (WebGPU backend) on the same adapter, and with PyTorch on the CPU when a Python with torch is
 * here (bench/peers/pytorch.ts), as ratios. Writes bench/RESULTS.md, keeping its "## Notes" section.
 *
 * Options: `--no-peer` (skip tfjs), `--no-pytorch`, `--only <substring>` (repeatable), `--out <path>`.
 */
import { parseArgs } from "node:util";
import { type BenchRow, rate } from "./harness.ts";
import { benchBatchnorm } from "./kernels/batchnorm.ts";
import { benchConv2d } from "./kernels/conv2d.ts";
import { benchMatmul } from "./kernels/matmul.ts";
import { benchResnet8Step } from "./kernels/resnet8.ts";
import { benchPytorch, type PytorchPeer } from "./peers/pytorch.ts";
import { benchTfjs } from "./peers/tfjs.ts";
import { initWebGpu } from "../src/device/runtime.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "no-peer": { type: "boolean", default: false },
    "no-pytorch": { type: "boolean", default: false },
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

let pytorch: PytorchPeer | null = null;
let pytorchNote = "not run (--no-pytorch)";
if (!values["no-pytorch"]) {
  log("pytorch-cpu: running the same workloads ...");
  const result = await benchPytorch();
  if ("missing" in result) pytorchNote = `not run: ${result.missing}`;
  else [pytorch, pytorchNote] = [result, result.describe];
  log(`pytorch-cpu: ${pytorchNote}`);
}

const fmtMs = (ms: number) => ms >= 100 ? ms.toFixed(0) : ms.toFixed(2);
/** A peer's rate, time and speed-up (peer time / our time: above 1× we are faster) for one row. */
function peerCells(p: BenchRow | undefined, row: BenchRow): string[] {
  if (!p) return ["—", "—", "—"];
  const speedUp = p.msPerIter / row.msPerIter;
  return [rate(p), fmtMs(p.msPerIter), speedUp.toFixed(speedUp >= 1 ? 1 : 2) + "×"];
}
const header = ["workload", "ours", "ours ms", "tfjs-webgpu", "tfjs ms", "speed-up vs tfjs"];
if (pytorch) header.push("pytorch-cpu", "pytorch ms", "speed-up vs pytorch");
const lines = [`| ${header.join(" | ")} |`, `|---|${header.slice(1).map(() => "---:").join("|")}|`];
for (const row of ours) {
  const cells = [
    row.name,
    rate(row),
    fmtMs(row.msPerIter),
    ...peerCells(peer.find((q) => q.name === row.name), row),
  ];
  if (pytorch) cells.push(...peerCells(pytorch.rows.find((q) => q.name === row.name), row));
  lines.push(`| ${cells.join(" | ")} |`);
}
const table = lines.join("\n");
console.log(table);

const command = `deno task bench${Deno.args.length ? " " + Deno.args.join(" ") : ""}`;
const report = `# Benchmark results

Produced by \`${command}\` on ${new Date().toISOString().slice(0, 10)}.

- Adapter: ${adapter}
- Machine: ${Deno.build.os}/${Deno.build.arch}, ${navigator.hardwareConcurrency} logical CPUs
- Peer: TensorFlow.js 4.22 with \`@tensorflow/tfjs-backend-webgpu\`, in the same Deno process, same adapter
- Second peer (bench/peers/pytorch.py, same workloads in eager PyTorch on the same CPU cores): ${pytorchNote}
- Rates: GFLOP/s (matmul 2·n³; conv 2·N·Cout·Ho·Wo·Cin·k²), GB/s of minimum traffic (batchnorm),
  images/s (training step). Speed-up = peer time / our time (below 1×: the peer is faster).

${table}
`;
/** The hand-written "## Notes" section of the previous report, kept across regenerations. */
async function previousNotes(path: string): Promise<string> {
  try {
    const text = await Deno.readTextFile(path);
    const at = text.indexOf("\n## Notes");
    return at >= 0 ? text.slice(at) : "";
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "";
    throw e;
  }
}

if (values.only!.length === 0 && !values["no-peer"]) {
  await Deno.writeTextFile(values.out!, report + (await previousNotes(values.out!)));
  log(`wrote ${values.out}`);
} else {
  log("(partial run: bench/RESULTS.md not rewritten)");
}
