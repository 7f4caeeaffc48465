import assert from "node:assert/strict";
import { STALE_TEMP_MS, writeFileAtomic } from "../../src/io/atomic.ts";
import { loadCheckpoint, loadIntoTensors, saveCheckpoint } from "../../src/io/checkpoint.ts";
import { appendJsonLine, markdownTable, readJson, readJsonLines, writeJson } from "../../src/io/report.ts";
import { encodeSafetensors } from "../../src/io/safetensors.ts";
import { fromArray, zeros } from "../../src/ops/creation.ts";
import { gpuTest } from "../helpers/setup.ts";

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

gpuTest("checkpoint: round trip through GPU tensors, with metadata", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckpt_" });
  try {
    const w = fromArray([1.5, -2, 3.25, 0, 1e-20, -7], [2, 3]);
    const labels = fromArray(new Int32Array([-3, 0, 2147483647, 5]), [4], "i32");
    const step = fromArray(new Uint32Array([4000000000]), [], "u32");
    const empty = zeros([0, 4]);
    const metadata = {
      epoch: 3,
      config: { lr: 0.1, arch: "resnet18" },
      name: "run-1",
      done: false,
      // Kept as numbers (JSON alone would turn them into null, and a resumed run's sums into 0).
      sums: [NaN, Infinity, -Infinity, 2],
    };
    const path = `${dir}/nested/model.safetensors`; // parent directory is created
    await saveCheckpoint(path, { tensors: { "conv.weight": w, labels, step, empty }, metadata });
    assert.deepEqual(await listDir(`${dir}/nested`), ["model.safetensors"]);

    const ckpt = await loadCheckpoint(path);
    assert.equal(ckpt.path, path);
    assert.deepEqual(ckpt.metadata, metadata);
    assert.deepEqual([...ckpt.tensors.keys()].sort(), ["conv.weight", "empty", "labels", "step"]);
    const cw = ckpt.tensors.get("conv.weight")!;
    assert.deepEqual([cw.dtype, cw.fileDType, cw.shape], ["f32", "F32", [2, 3]]);
    assert.deepEqual(Array.from(cw.data), Array.from(Float32Array.from([1.5, -2, 3.25, 0, 1e-20, -7])));
    assert.deepEqual(Array.from(ckpt.tensors.get("labels")!.data), [-3, 0, 2147483647, 5]);
    assert.deepEqual(ckpt.tensors.get("step")!.shape, []);
    assert.deepEqual(Array.from(ckpt.tensors.get("step")!.data), [4000000000]);
    assert.deepEqual(ckpt.tensors.get("empty")!.shape, [0, 4]);

    // Load into fresh tensors (NaN-free zeros) and read them back.
    const model = {
      "conv.weight": zeros([2, 3]),
      labels: zeros([4], "i32"),
      step: zeros([], "u32"),
      empty: zeros([0, 4]),
    };
    const result = loadIntoTensors(ckpt, model);
    assert.deepEqual(result.loaded.sort(), ["conv.weight", "empty", "labels", "step"]);
    assert.deepEqual([result.missing, result.unexpected], [[], []]);
    assert.deepEqual(Array.from(await model["conv.weight"].toArray()), Array.from(cw.data));
    assert.deepEqual(Array.from(await model.labels.toArray()), [-3, 0, 2147483647, 5]);
    assert.deepEqual(Array.from(await model.step.toArray()), [4000000000]);
    for (const t of [w, labels, step, empty, ...Object.values(model)]) t.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

gpuTest(
  "checkpoint: atomic overwrite; a failed save leaves the previous file intact and no temp",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "ckpt_" });
    try {
      const path = `${dir}/last.safetensors`;
      const a = fromArray([1, 2, 3]);
      await saveCheckpoint(path, { tensors: { a }, metadata: { epoch: 1 } });
      const b = fromArray([4, 5, 6]);
      await saveCheckpoint(path, { tensors: { a: b }, metadata: { epoch: 2 } });
      assert.deepEqual(await listDir(dir), ["last.safetensors"]);
      const second = await Deno.readFile(path);
      assert.deepEqual((await loadCheckpoint(path)).metadata, { epoch: 2 });

      // A disposed tensor: the save fails before touching the file.
      b.dispose();
      await assert.rejects(
        saveCheckpoint(path, { tensors: { a: b }, metadata: { epoch: 3 } }),
        /saveCheckpoint\(.*last\.safetensors\): tensor "a" was disposed before saving/,
      );
      assert.deepEqual(await Deno.readFile(path), second);
      assert.deepEqual(await listDir(dir), ["last.safetensors"]);

      // Metadata that cannot be JSON-encoded: same.
      await assert.rejects(
        saveCheckpoint(path, { tensors: { a }, metadata: { f: () => 1 } }),
        /metadata "f" \(function\) is not JSON-serialisable/,
      );
      assert.deepEqual(await Deno.readFile(path), second);

      // The rename fails (the target is a non-empty directory): the temp file is removed.
      await Deno.mkdir(`${dir}/blocked.safetensors`);
      await Deno.writeTextFile(`${dir}/blocked.safetensors/x`, "x");
      await assert.rejects(
        saveCheckpoint(`${dir}/blocked.safetensors`, { tensors: { a }, metadata: {} }),
        /could not write .*blocked\.safetensors/,
      );
      assert.deepEqual(await listDir(dir), ["blocked.safetensors", "last.safetensors"]);
      assert.deepEqual(await listDir(`${dir}/blocked.safetensors`), ["x"]);

      // A read-only directory (root ignores permissions, so only checked as a normal user).
      if (Deno.uid() !== 0) {
        await Deno.chmod(dir, 0o555);
        try {
          await assert.rejects(saveCheckpoint(path, { tensors: { a }, metadata: {} }), /could not write/);
        } finally {
          await Deno.chmod(dir, 0o755);
        }
        assert.deepEqual(await Deno.readFile(path), second);
        assert.deepEqual(await listDir(dir), ["blocked.safetensors", "last.safetensors"]);
      }
      a.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

gpuTest(
  "checkpoint: a missing file says which file and that training can start without --resume",
  async () => {
    await assert.rejects(
      loadCheckpoint("/nonexistent/run/last.safetensors"),
      /loadCheckpoint: no checkpoint at \/nonexistent\/run\/last\.safetensors \(no such file; check the path\)/,
    );
    const dir = await Deno.makeTempDir({ prefix: "ckpt_" });
    try {
      await Deno.writeFile(`${dir}/bad.safetensors`, new Uint8Array(3));
      await assert.rejects(loadCheckpoint(`${dir}/bad.safetensors`), /bad\.safetensors: file is 3 bytes/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

gpuTest("checkpoint: loadIntoTensors reports every mismatch in one error and writes nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckpt_" });
  try {
    const path = `${dir}/c.safetensors`;
    const file = {
      "layer1.0.conv1.weight": zeros([64, 64, 3, 3]),
      "fc.bias": fromArray([1, 2, 3]),
      "bn.count": fromArray(new Int32Array([1, 2]), [2], "i32"),
      "old.head": zeros([5]),
    };
    await saveCheckpoint(path, { tensors: file, metadata: {} });
    const ckpt = await loadCheckpoint(path);

    const model = {
      "layer1.0.conv1.weight": zeros([32, 32, 3, 3]),
      "fc.bias": fromArray([9, 9, 9]),
      "bn.count": zeros([2]),
      "new.head": zeros([5]),
    };
    let message = "";
    try {
      loadIntoTensors(ckpt, model);
    } catch (e) {
      message = (e as Error).message;
    }
    assert.match(message, /c\.safetensors\): the checkpoint does not match the model \(4 problems/);
    assert.match(
      message,
      /\n {2}layer1\.0\.conv1\.weight: shape \[64,64,3,3\] in file, \[32,32,3,3\] in model/,
    );
    assert.match(message, /\n {2}bn\.count: dtype I32 \(i32\) in file, f32 in model/);
    assert.match(message, /\n {2}new\.head: missing from the file \(model has f32\[5\]\)/);
    assert.match(message, /\n {2}old\.head: in the file \(F32\[5\]\) but not in the model/);
    assert.doesNotMatch(message, /fc\.bias/);
    // Nothing was loaded: even the matching tensor keeps its data.
    assert.deepEqual(Array.from(await model["fc.bias"].toArray()), [9, 9, 9]);

    // Non-strict: missing/unexpected names are skipped and listed, shape mismatches still fail.
    assert.throws(
      () => loadIntoTensors(ckpt, model, { strict: false }),
      /\(2 problems.*\n.*conv1\.weight: shape/s,
    );
    const partial = { "fc.bias": model["fc.bias"], "new.head": model["new.head"] };
    const result = loadIntoTensors(ckpt, partial, { strict: false });
    assert.deepEqual(result.loaded, ["fc.bias"]);
    assert.deepEqual(result.missing, ["new.head"]);
    assert.deepEqual(result.unexpected.sort(), ["bn.count", "layer1.0.conv1.weight", "old.head"]);

    // Names of Object.prototype's properties are tensors like any other.
    const protoPath = `${dir}/proto.safetensors`;
    await saveCheckpoint(protoPath, { tensors: { "fc.bias": file["fc.bias"], toString: file["old.head"] } });
    const proto = await loadCheckpoint(protoPath);
    assert.throws(
      () => loadIntoTensors(proto, { "fc.bias": model["fc.bias"] }),
      /toString: in the file \(F32\[5\]\) but not in the model/,
    );
    assert.deepEqual(Array.from(await model["fc.bias"].toArray()), [1, 2, 3]);
    for (const t of [...Object.values(file), ...Object.values(model)]) t.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

gpuTest("checkpoint: a PyTorch-style file (I64, plain string metadata) loads into i32 tensors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckpt_" });
  try {
    // Hand-built: F32 weight and I64 num_batches_tracked, metadata {"format": "pt"} (not JSON-encoded).
    const header = JSON.stringify({
      __metadata__: { format: "pt", epoch: "7" },
      "bn.weight": { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      "bn.num_batches_tracked": { dtype: "I64", shape: [], data_offsets: [8, 16] },
    });
    const json = new TextEncoder().encode(header);
    const bytes = new Uint8Array(8 + json.length + 16);
    const view = new DataView(bytes.buffer);
    view.setBigUint64(0, BigInt(json.length), true);
    bytes.set(json, 8);
    view.setFloat32(8 + json.length, 0.5, true);
    view.setFloat32(12 + json.length, 2, true);
    view.setBigInt64(16 + json.length, 1234n, true);
    await Deno.writeFile(`${dir}/pt.safetensors`, bytes);

    const ckpt = await loadCheckpoint(`${dir}/pt.safetensors`);
    assert.deepEqual(ckpt.metadata, { format: "pt", epoch: 7 });
    const count = zeros([], "i32");
    const weight = zeros([2]);
    const wrong = zeros([3]);
    assert.throws(
      () => loadIntoTensors(ckpt, { "bn.weight": wrong, "bn.num_batches_tracked": count }),
      /\(1 problem;.*\n {2}bn\.weight: shape \[2\] in file, \[3\] in model$/s,
    );
    wrong.dispose();
    loadIntoTensors(ckpt, { "bn.weight": weight, "bn.num_batches_tracked": count });
    assert.equal(await count.item(), 1234);
    assert.deepEqual(Array.from(await weight.toArray()), [0.5, 2]);
    count.dispose();
    weight.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic: replaces the content and leaves no temp file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "atomic_" });
  try {
    const bytes = encodeSafetensors({ x: { dtype: "F32", shape: [1], data: new Float32Array([1]) } });
    await writeFileAtomic(`${dir}/f`, bytes);
    await writeFileAtomic(`${dir}/f`, new Uint8Array([1, 2, 3]));
    assert.deepEqual(await Deno.readFile(`${dir}/f`), new Uint8Array([1, 2, 3]));
    assert.deepEqual(await listDir(dir), ["f"]);
    // A writer killed mid-write left its temp file: the next write of that path removes it, and
    // leaves other files alone (another path's temp, names that only look alike, and a fresh temp
    // file of the same path: another process writing it right now).
    const others = [
      "f.tmp-0123456789ab",
      "g.tmp-0123456789ab",
      "f.tmp-notours",
      "f.tmp-0123456789abc",
      "f.tmp-fedcba987654",
    ];
    const old = new Date(Date.now() - STALE_TEMP_MS - 60_000);
    for (const name of others) {
      await Deno.writeFile(`${dir}/${name}`, new Uint8Array(8));
      if (name !== "f.tmp-fedcba987654") await Deno.utime(`${dir}/${name}`, old, old);
    }
    await writeFileAtomic(`${dir}/f`, new Uint8Array([4]));
    assert.deepEqual(await listDir(dir), ["f", ...others.slice(1)].sort());
    // A parent path that is a file: the error names the folder.
    await assert.rejects(writeFileAtomic(`${dir}/f/x`, new Uint8Array([1])), /could not write .*f\/x/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report: writeJson (atomic, pretty), appendJsonLine / readJsonLines", async () => {
  const dir = await Deno.makeTempDir({ prefix: "report_" });
  try {
    const value = { acc: 0.5, curve: new Float32Array([1, 0.5]), nested: { n: 3n } };
    await writeJson(`${dir}/out/metrics.json`, value);
    const text = await Deno.readTextFile(`${dir}/out/metrics.json`);
    assert.equal(
      text,
      '{\n  "acc": 0.5,\n  "curve": [\n    1,\n    0.5\n  ],\n  "nested": {\n    "n": 3\n  }\n}\n',
    );
    assert.deepEqual(await listDir(`${dir}/out`), ["metrics.json"]);

    const log = `${dir}/logs/train.jsonl`;
    await appendJsonLine(log, { step: 1, loss: 2.5 });
    await appendJsonLine(log, { step: 2, loss: 1.5 });
    assert.equal(await Deno.readTextFile(log), '{"step":1,"loss":2.5}\n{"step":2,"loss":1.5}\n');
    await Deno.writeTextFile(log, '{"step":3,"lo', { append: true }); // a torn final append
    assert.deepEqual(await readJsonLines(log), [{ step: 1, loss: 2.5 }, { step: 2, loss: 1.5 }]);
    // The next append (a resumed run) cuts the torn line off instead of gluing itself to it.
    await appendJsonLine(log, { step: 3, loss: 1 });
    assert.equal(
      await Deno.readTextFile(log),
      '{"step":1,"loss":2.5}\n{"step":2,"loss":1.5}\n{"step":3,"loss":1}\n',
    );
    await Deno.writeTextFile(log, "x\n", { append: true });
    await assert.rejects(readJsonLines(log), /train\.jsonl:4: invalid JSON line/);

    // NaN and ±Infinity survive (JSON.stringify would write null): a diverged loss stays visible.
    const nonFinite = { loss: NaN, curve: new Float32Array([1, NaN, Infinity]), low: -Infinity, name: "x" };
    await writeJson(`${dir}/nf.json`, nonFinite);
    assert.match(await Deno.readTextFile(`${dir}/nf.json`), /"loss": "NaN"/);
    assert.deepEqual(await readJson(`${dir}/nf.json`), { ...nonFinite, curve: [1, NaN, Infinity] });
    await appendJsonLine(`${dir}/nf.jsonl`, nonFinite);
    assert.deepEqual(await readJsonLines(`${dir}/nf.jsonl`), [{ ...nonFinite, curve: [1, NaN, Infinity] }]);
    await assert.rejects(readJson(`${dir}/missing.json`), /missing\.json/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report: markdownTable pads, aligns numbers right and escapes pipes", () => {
  const table = markdownTable(["model", "clean", "robust"], [["resnet|18", 0.91234, 45], ["wrn", 0.8, 7]]);
  assert.equal(
    table,
    [
      "| model      |  clean | robust |",
      "| ---------- | -----: | -----: |",
      "| resnet\\|18 | 0.9123 |     45 |",
      "| wrn        | 0.8000 |      7 |",
      "",
    ].join("\n"),
  );
  assert.equal(
    markdownTable(["a", "b"], [["x", "y"]], ["center", "right"]),
    "|  a  |   b |\n| :-: | --: |\n|  x  |   y |\n",
  );
  assert.throws(() => markdownTable(["a", "b"], [["x"]]), /row 0 has 1 cells, the header has 2/);
});
