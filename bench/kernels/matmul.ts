/**
 * Matmul throughput (flop = 2·M·N·K) for the kernel variant chosen for the current adapter.
 * Standalone: `XDG_RUNTIME_DIR=/tmp deno run -A bench/kernels/matmul.ts`.
 */
import { currentGpu, initWebGpu } from "../../src/device/mod.ts";
import { matmul, type MatmulOptions, matmulTunables } from "../../src/ops/matmul.ts";
import { rand } from "../../src/ops/random.ts";
import { type BenchRow, rate, timeGpu } from "../harness.ts";
import { WORK } from "../peers/workloads.ts";

/** Square products, plus the transposed forms that gradients (Aᵀ·B) and linear layers (A·Bᵀ) use. */
const CASES: { n: number; options: MatmulOptions; label: string }[] = [
  { n: 512, options: {}, label: "A·B" },
  { n: 1024, options: {}, label: "A·B" },
  { n: 1024, options: { transposeA: true }, label: "Aᵀ·B" },
  { n: 1024, options: { transposeB: true }, label: "A·Bᵀ" },
];

export async function benchMatmul(): Promise<BenchRow[]> {
  const variant = matmulTunables.variant ?? currentGpu().adapterClass;
  const rows: BenchRow[] = [];
  for (const { n, options, label } of CASES) {
    const a = rand([n, n]), b = rand([n, n]);
    const msPerIter = await timeGpu(() => matmul(a, b, options).dispose());
    // Plain A·B rows carry the shared workload names so they pair with the peers' rows.
    const shared = label === "A·B"
      ? (n === 512 ? WORK.matmul512.name : n === 1024 ? WORK.matmul1024.name : null)
      : null;
    rows.push({
      name: shared ?? `matmul ${label} ${n}x${n}x${n} (${variant} kernel)`,
      impl: "ours",
      msPerIter,
      flop: 2 * n ** 3,
    });
    a.dispose();
    b.dispose();
  }
  return rows;
}

if (import.meta.main) {
  await initWebGpu();
  for (const row of await benchMatmul()) {
    console.log(`${row.name.padEnd(44)} ${row.msPerIter.toFixed(1).padStart(8)} ms  ${rate(row)}`);
  }
}
