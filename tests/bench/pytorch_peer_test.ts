/**
 * The PyTorch peer's glue (bench/peers/pytorch.ts), without PyTorch: a stand-in "python" script
 * answers the torch probe and prints the JSON that bench/peers/pytorch.py would.
 */
import assert from "node:assert/strict";
import { benchPytorch } from "../../bench/peers/pytorch.ts";
import { WORK } from "../../bench/peers/workloads.ts";

async function withFakePython(json: string, fn: () => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  const python = `${dir}/python`;
  // `-c "import torch"` succeeds; `<script> --json` prints the canned output.
  await Deno.writeTextFile(
    python,
    `#!/bin/sh\nif [ "$1" = "-c" ]; then exit 0; fi\ncat <<'JSON'\n${json}\nJSON\n`,
  );
  await Deno.chmod(python, 0o755);
  Deno.env.set("BENCH_PYTHON", python);
  try {
    await fn();
  } finally {
    Deno.env.delete("BENCH_PYTHON");
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("pytorch peer: rows take the shared workload names and work counts", async () => {
  const json = JSON.stringify({
    info: { torch: "9.9.9", threads: 2 },
    msPerIter: { matmul1024: 12.5, resnet8Step: 40 },
  });
  await withFakePython(json, async () => {
    const peer = await benchPytorch();
    assert.ok(!("missing" in peer));
    assert.match(peer.describe, /PyTorch 9\.9\.9 on the CPU, 2 threads/);
    assert.deepEqual(peer.rows, [
      { ...WORK.matmul1024, impl: "pytorch-cpu", msPerIter: 12.5 },
      { ...WORK.resnet8Step, impl: "pytorch-cpu", msPerIter: 40 },
    ]);
  });
});

Deno.test("pytorch peer: an unknown workload key is an error naming it", async () => {
  const json = JSON.stringify({ info: { torch: "1", threads: 1 }, msPerIter: { convSideways: 1 } });
  await withFakePython(json, async () => {
    await assert.rejects(benchPytorch(), /unknown workload "convSideways"/);
  });
});

Deno.test("pytorch peer: no Python with torch is a reason, not a failure", async () => {
  Deno.env.set("BENCH_PYTHON", "/nonexistent/python3");
  try {
    const peer = await benchPytorch();
    assert.ok("missing" in peer);
    assert.match(peer.missing, /no Python with torch \(tried \/nonexistent\/python3; .*python3-torch/);
  } finally {
    Deno.env.delete("BENCH_PYTHON");
  }
});
