/**
 * What the commands check before long work: an --out folder that cannot be written, and
 * --normalize values, are usage errors naming the flag.
 */
import assert from "node:assert/strict";
import { checkpointFallback, checkWritableFolder, linfBudgetWarning } from "../../cli/common.ts";
import { UsageError } from "../../src/train/options.ts";
import { encodeSafetensors } from "../../src/io/safetensors.ts";
import { defaultClassifierConfig } from "../../src/train/classifier_options.ts";

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

Deno.test("linfBudgetWarning: an l∞ budget of 1 or more is probably k meant as k/255", () => {
  assert.equal(linfBudgetWarning("--eps", 8 / 255), null);
  assert.equal(linfBudgetWarning("--eps", 0.999), null);
  assert.match(
    linfBudgetWarning("--eps", 8)!,
    /--eps 8 is an l∞ budget of at least 1 .* did you mean 8\/255 \(= 0\.0314\)/,
  );
  assert.match(linfBudgetWarning("--eps", 1)!, /--eps 1 is an l∞ budget/);
});

async function attackCli(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../cli/attack.ts", import.meta.url).pathname, ...args],
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("attack CLI: --seeds and --eps are checked before the checkpoint and the data are read", async () => {
  const common = ["--checkpoint", "/nonexistent/model.safetensors", "--attack", "fgsm"];
  const seeds = await attackCli([...common, "--seeds", "0,x"]);
  assert.equal(seeds.code, 2, seeds.stderr);
  assert.match(seeds.stderr, /--seeds '0,x': expected non-negative integers/);
  const eps = await attackCli([...common, "--eps", "8"]);
  assert.equal(eps.code, 2, eps.stderr);
  assert.match(
    eps.stderr,
    /warning: --eps 8 is an l∞ budget of at least 1[^\n]*\n.*--checkpoint \/nonexistent\/model\.safetensors: no such file/s,
  );
  const twice = await attackCli([...common, "--seeds", "1,1"]);
  assert.match(twice.stderr, /--seeds '1,1': seed 1 is given twice/);
});

Deno.test("attack CLI: --model/--dataset/--width that contradict our checkpoint's metadata are refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = defaultClassifierConfig({ model: "small-cnn", dataset: "fashion-mnist" });
    const path = `${dir}/ours.safetensors`;
    await Deno.writeFile(
      path,
      encodeSafetensors(
        { "model.fc.bias": { dtype: "F32", shape: [1], data: new Float32Array([0]) } },
        { config: JSON.stringify(config) },
      ),
    );
    const r = await attackCli(["--checkpoint", path, "--attack", "fgsm", "--dataset", "cifar10"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /--dataset cifar10: .*ours\.safetensors holds a dataset fashion-mnist \(from its metadata\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
