/**
 * The smoke runner (tests/smoke/run.ts) repeats a module only for the known GL exit crash: every
 * test passed, then glibc aborted on a corrupted heap. These cases pin that rule down.
 */
import assert from "node:assert/strict";
import { classifySmokeRun, MAX_ATTEMPTS, type ProcessResult, runModule, SMOKE_MODULES } from "./run.ts";

const report = (passed: number, failed: number) =>
  `running 3 tests from ./tests/smoke/conv_test.ts\nconv2d ... ok (2s)\n\n` +
  `${failed ? "FAILED" : "ok"} | ${passed} passed | ${failed} failed (13s)\n`;

const run = (over: Partial<ProcessResult>): ProcessResult => ({
  code: 0,
  signal: null,
  stdout: report(3, 0),
  stderr: "",
  ...over,
});

Deno.test("smoke runner: a clean exit passes", () => {
  assert.equal(classifySmokeRun(run({})), "passed");
});

Deno.test("smoke runner: each glibc heap abort after a full pass is the known exit crash", () => {
  for (
    const message of [
      "corrupted size vs. prev_size in fastbins",
      "double free or corruption (fasttop)",
      "malloc_consolidate(): invalid chunk size",
    ]
  ) {
    assert.equal(classifySmokeRun(run({ code: 134, stderr: message + "\n" })), "abortedAtExit", message);
    assert.equal(
      classifySmokeRun(run({ code: 134, signal: "SIGABRT", stderr: message })),
      "abortedAtExit",
      `${message}, reported as a signal`,
    );
  }
  // deno's coloured report (when colours are not switched off) still counts.
  const coloured = "\x1b[0m\x1b[32mok\x1b[0m | 20 passed | 0 failed \x1b[0m\x1b[38;5;245m(13s)\x1b[0m\n";
  assert.equal(
    classifySmokeRun(run({ code: 134, stdout: coloured, stderr: "double free or corruption (fasttop)" })),
    "abortedAtExit",
  );
  // Test steps in the count.
  assert.equal(
    classifySmokeRun(
      run({
        code: 134,
        stdout: "ok | 4 passed (6 steps) | 0 failed (2s)\n",
        stderr: "double free or corruption",
      }),
    ),
    "abortedAtExit",
  );
});

Deno.test("smoke runner: anything else fails at once", () => {
  const heap = "corrupted size vs. prev_size in fastbins";
  const cases: [string, Partial<ProcessResult>][] = [
    ["a failed test, then the exit crash", { code: 134, stdout: report(2, 1), stderr: heap }],
    ["a failed test, clean exit status 1", { code: 1, stdout: report(2, 1) }],
    ["a crash before the report", { code: 134, stdout: "running 3 tests\nconv2d ...", stderr: heap }],
    ["no test ran", { code: 134, stdout: "ok | 0 passed | 0 failed (0ms)\n", stderr: heap }],
    ["SIGABRT without a heap message (a panic)", { code: 134, stderr: "thread 'main' panicked" }],
    ["a heap message with another status", { code: 139, signal: "SIGSEGV", stderr: heap }],
    ["a heap message and exit status 1", { code: 1, stderr: heap }],
  ];
  for (const [what, over] of cases) assert.equal(classifySmokeRun(run(over)), "failed", what);
});

/** A fake `deno test` that returns `results` in turn, counting its calls. */
function scripted(results: Partial<ProcessResult>[]) {
  let calls = 0;
  return {
    run: () => Promise.resolve(run(results[Math.min(calls++, results.length - 1)])),
    calls: () => calls,
  };
}

Deno.test("smoke runner: an exit crash is run again, up to MAX_ATTEMPTS runs in all", async () => {
  const crash = { code: 134, stderr: "double free or corruption (fasttop)" };
  const quiet = () => {};
  // Crashes twice, then exits cleanly: passed on its third run.
  let fake = scripted([crash, crash, {}]);
  let outcome = await runModule("m_test.ts", fake.run, quiet);
  assert.deepEqual([outcome.verdict, outcome.attempts, fake.calls()], ["passed", 3, 3]);
  // Crashes every time: stops after MAX_ATTEMPTS and is not a pass.
  fake = scripted([crash]);
  outcome = await runModule("m_test.ts", fake.run, quiet);
  assert.deepEqual([outcome.verdict, outcome.attempts, fake.calls()], [
    "abortedAtExit",
    MAX_ATTEMPTS,
    MAX_ATTEMPTS,
  ]);
  // A failed test is never run again.
  fake = scripted([{ code: 1, stdout: report(2, 1) }, {}]);
  outcome = await runModule("m_test.ts", fake.run, quiet);
  assert.deepEqual([outcome.verdict, outcome.attempts, fake.calls()], ["failed", 1, 1]);
});

Deno.test("smoke runner: every listed module exists and is a test module", async () => {
  for (const module of SMOKE_MODULES) {
    assert.match(module, /_test\.ts$/);
    const info = await Deno.stat(new URL(`../../${module}`, import.meta.url));
    assert.ok(info.isFile, module);
  }
});
