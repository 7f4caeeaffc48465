/**
 * What the commands check before long work: an --out folder that cannot be written, and
 * --normalize values, are usage errors naming the flag.
 */
import assert from "node:assert/strict";
import { checkpointFallback, checkWritableFolder } from "../../cli/common.ts";
import { UsageError } from "../../src/train/options.ts";

Deno.test("checkWritableFolder: creates the folder, leaves no probe; a file in the way is a usage error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await checkWritableFolder(`${dir}/new/out`, "--out");
    assert.deepEqual([...Deno.readDirSync(`${dir}/new/out`)], []);
    await Deno.writeTextFile(`${dir}/file`, "x");
    await assert.rejects(
      checkWritableFolder(`${dir}/file`, "--out"),
      (e: Error) =>
        e instanceof UsageError && e.message.startsWith(`--out ${dir}/file: not a writable folder`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpointFallback: --normalize is parsed up front; a bad value is a usage error", () => {
  const base = { model: "resnet8", dataset: "cifar10", width: 1 };
  assert.deepEqual(checkpointFallback({ ...base, normalize: "none" }).normalize, { mean: [0], std: [1] });
  assert.equal(checkpointFallback({ ...base, normalize: null }).normalize, null);
  assert.throws(
    () => checkpointFallback({ ...base, normalize: "0.5/0" }),
    (e: Error) => e instanceof UsageError && /^--normalize: expected none/.test(e.message),
  );
});
