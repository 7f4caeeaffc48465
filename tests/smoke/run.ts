/**
 * Runs the smoke subset (`deno task test:smoke`): each module in its own `deno test` process, two
 * at a time, on whatever backend DENO_WEBGPU_BACKEND selects (CI runs it on GL).
 *
 * Why one process per module: on the GL backend (EGL llvmpipe, Mesa 22.3) a `deno test` process
 * sometimes aborts while it exits, after every test has passed: glibc finds a corrupted heap
 * ("corrupted size vs. prev_size in fastbins", "double free or corruption (fasttop)",
 * "malloc_consolidate(): invalid chunk size") in a thread that ends while the main thread runs the
 * shared libraries' destructors (a core dump: main in `_dl_fini`, the aborting thread in
 * `tcache_thread_shutdown`); a minimal WebGPU program on GL never did (0 of 30). Measured on
 * this project's CI machine class (2-core AMD EPYC VM, 2026-12-07): all modules in one
 * `--parallel` process aborted in 9 of 28 runs, one module per process in 5 of 176. Such a run
 * is repeated, up to `MAX_ATTEMPTS` in all. Nothing else is: a failed test, another exit status
 * or a crash before the report fails at once.
 *
 *   DENO_WEBGPU_BACKEND=gl deno task test:smoke
 */

/** The smoke modules, relative to the repository root. */
export const SMOKE_MODULES = [
  "tests/smoke/backend_test.ts",
  "tests/smoke/conv_test.ts",
  "tests/smoke/operand_textures_test.ts",
  "tests/ops/batchnorm_test.ts",
  "tests/train/convnet_training_test.ts",
];

/** Where the module paths start (and deno.json is). */
const REPO_ROOT = new URL("../../", import.meta.url).pathname;

/** Runs of one module in all before an abort at exit counts as a failure. */
export const MAX_ATTEMPTS = 3;

/** Modules run side by side (each process uses every core while it compiles shaders). */
const CONCURRENCY = 2;

/** What a finished `deno test` process left. */
export interface ProcessResult {
  /** Exit status; 128 + signal number when a signal ended it (134: SIGABRT). */
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export type SmokeVerdict = "passed" | "abortedAtExit" | "failed";

/** glibc's heap-check messages (malloc/malloc.c `malloc_printerr`). */
const HEAP_ABORT =
  /corrupted size vs\. prev_size|double free or corruption|malloc_consolidate\(\): invalid chunk size|free\(\): invalid (pointer|size|next size)|malloc\(\): (corrupted|unaligned|invalid)/;

/** `deno test`'s last line when every test passed: "ok | 20 passed | 0 failed (13s)". */
const ALL_PASSED = /^ok \| ([1-9]\d*) passed(?: \(\d+ steps?\))? \| 0 failed\b/m;

// deno colours its report even when piped (NO_COLOR is set for the children, but be safe).
// deno-lint-ignore no-control-regex
const stripColours = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "");

/**
 * "abortedAtExit" only for the known exit crash: SIGABRT, a glibc heap message, and a report that
 * counts at least one test passed and none failed. Anything else that did not exit 0 "failed".
 */
export function classifySmokeRun(r: ProcessResult): SmokeVerdict {
  if (r.code === 0 && r.signal === null) return "passed";
  const aborted = r.signal === "SIGABRT" || r.code === 134;
  const report = stripColours(r.stdout);
  if (aborted && HEAP_ABORT.test(r.stderr) && ALL_PASSED.test(report)) return "abortedAtExit";
  return "failed";
}

export interface ModuleOutcome {
  module: string;
  verdict: SmokeVerdict;
  /** Processes started for the module. */
  attempts: number;
  seconds: number;
}

/** `deno test -A <module>` in a process of its own, from the repository root. */
async function spawnDenoTest(module: string): Promise<ProcessResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", module],
    cwd: REPO_ROOT,
    env: { NO_COLOR: "1", LIBC_FATAL_STDERR_: "1" },
    stdout: "piped",
    stderr: "piped",
  });
  const out = await child.output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, signal: out.signal, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** Runs one module until it passes, fails, or has aborted at exit MAX_ATTEMPTS times. */
export async function runModule(
  module: string,
  run: (module: string) => Promise<ProcessResult> = spawnDenoTest,
  log: (line: string) => void = console.log,
): Promise<ModuleOutcome> {
  const start = performance.now();
  for (let attempt = 1;; attempt++) {
    const result = await run(module);
    const verdict = classifySmokeRun(result);
    log(`\n===== ${module} (run ${attempt}): ${verdict}`);
    log(result.stdout.trimEnd());
    if (result.stderr.trim()) log(result.stderr.trimEnd());
    if (verdict !== "abortedAtExit" || attempt === MAX_ATTEMPTS) {
      return { module, verdict, attempts: attempt, seconds: (performance.now() - start) / 1000 };
    }
    log(`===== ${module}: every test passed, then the process aborted at exit; running it again`);
  }
}

/** Runs every module (CONCURRENCY at a time) and returns the outcomes in SMOKE_MODULES order. */
async function runAll(modules: string[]): Promise<ModuleOutcome[]> {
  const outcomes: ModuleOutcome[] = new Array(modules.length);
  let next = 0;
  const worker = async () => {
    while (next < modules.length) {
      const i = next++;
      outcomes[i] = await runModule(modules[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, modules.length) }, worker));
  return outcomes;
}

if (import.meta.main) {
  const backend = Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default";
  console.log(`smoke tests, backend ${backend}: ${SMOKE_MODULES.length} modules, one process each`);
  const outcomes = await runAll(SMOKE_MODULES);
  console.log("\n| module | result | runs | seconds |\n|---|---|---:|---:|");
  for (const o of outcomes) {
    console.log(`| ${o.module} | ${o.verdict} | ${o.attempts} | ${o.seconds.toFixed(0)} |`);
  }
  const bad = outcomes.filter((o) => o.verdict !== "passed");
  if (bad.length > 0) {
    console.error(`smoke tests failed: ${bad.map((o) => `${o.module} (${o.verdict})`).join(", ")}`);
    Deno.exit(1);
  }
  console.log("smoke tests: every module passed");
}
