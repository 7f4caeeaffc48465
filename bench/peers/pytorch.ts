/**
 * Peer benchmark: PyTorch on the CPU, when a `python3` with `torch` is on this machine. Runs
 * bench/peers/pytorch.py in a child process (our engine and tfjs stay in this one) and turns its
 * per-workload times into BenchRows with the names and work counts of ./workloads.ts.
 *
 * Which Python: $BENCH_PYTHON if set, else the first of `python3` and `/usr/bin/python3` that
 * imports torch (Debian's `python3-torch` lives under the system Python, which a pyenv or venv
 * `python3` earlier on PATH hides).
 *
 * Run standalone: `XDG_RUNTIME_DIR=/tmp deno run -A bench/peers/pytorch.ts`
 */
import { type BenchRow, rate } from "../harness.ts";
import { WORK } from "./workloads.ts";

export interface PytorchPeer {
  rows: BenchRow[];
  /** e.g. "PyTorch 1.13.1 on the CPU, 2 threads, /usr/bin/python3". */
  describe: string;
}

type WorkKey = keyof typeof WORK;

async function runPython(
  python: string,
  args: string[],
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  try {
    const out = await new Deno.Command(python, { args, stdout: "piped", stderr: "piped" }).output();
    const text = new TextDecoder();
    return { ok: out.success, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
  } catch (e) {
    // Not installed: Deno.Command throws NotFound.
    return { ok: false, stdout: "", stderr: (e as Error).message };
  }
}

/** The first Python that imports torch, or null (with what was tried). */
async function findPython(): Promise<{ python: string | null; tried: string[] }> {
  const fromEnv = Deno.env.get("BENCH_PYTHON");
  const candidates = fromEnv ? [fromEnv] : ["python3", "/usr/bin/python3"];
  for (const python of candidates) {
    if ((await runPython(python, ["-c", "import torch"])).ok) return { python, tried: candidates };
  }
  return { python: null, tried: candidates };
}

/** PyTorch's rows, or a one-line reason why there are none (no Python with torch). */
export async function benchPytorch(): Promise<PytorchPeer | { missing: string }> {
  const { python, tried } = await findPython();
  if (!python) {
    return {
      missing: `no Python with torch (tried ${tried.join(", ")}; on Debian: apt-get install python3-torch, ` +
        "or set BENCH_PYTHON)",
    };
  }
  const script = new URL("./pytorch.py", import.meta.url).pathname;
  const run = await runPython(python, [script, "--json"]);
  if (!run.ok) throw new Error(`pytorch peer: ${python} ${script} failed:\n${run.stderr.trim()}`);
  const { info, msPerIter } = JSON.parse(run.stdout) as {
    info: { torch: string; threads: number; blas?: string };
    msPerIter: Record<string, number>;
  };
  const rows = Object.entries(msPerIter).map(([key, ms]) => {
    const work = WORK[key as WorkKey];
    if (!work) throw new Error(`pytorch peer: unknown workload "${key}" (not in bench/peers/workloads.ts)`);
    return { ...work, impl: "pytorch-cpu", msPerIter: ms };
  });
  return {
    rows,
    describe: `PyTorch ${info.torch} on the CPU, ${info.threads} threads, ${python}; matmul BLAS: ${
      info.blas ?? "unknown"
    }; best of 3 rounds`,
  };
}

if (import.meta.main) {
  const peer = await benchPytorch();
  if ("missing" in peer) console.log(`PyTorch peer: ${peer.missing}`);
  else {
    console.log(peer.describe);
    for (const row of peer.rows) {
      console.log(`  ${row.name.padEnd(44)} ${row.msPerIter.toFixed(2).padStart(10)} ms  ${rate(row)}`);
    }
  }
}
