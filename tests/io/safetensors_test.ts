import assert from "node:assert/strict";
import { decodeSafetensors, encodeSafetensors, halfToFloat } from "../../src/io/safetensors.ts";

/** Builds a file by hand: u64 LE header length, the JSON header (space-padded to `align`), data. */
function buildFile(header: unknown, data: Uint8Array, align = 8): Uint8Array {
  let json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const padded = Math.ceil(json.length / align) * align;
  const withSpaces = new Uint8Array(padded).fill(0x20);
  withSpaces.set(json);
  json = withSpaces;
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function bytesOf(...arrays: ArrayBufferView[]): Uint8Array {
  const parts = arrays.map((a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function headerOf(bytes: Uint8Array): { length: number; json: Record<string, unknown> } {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return { length, json: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length))) };
}

Deno.test("safetensors: round trip of F32, I32, U32, scalar and empty tensors with metadata", () => {
  const entries = {
    "weight": { dtype: "F32" as const, shape: [2, 3], data: new Float32Array([1, -2.5, 3e-8, 1e30, -0, 7]) },
    "labels": { dtype: "I32" as const, shape: [4], data: new Int32Array([-2147483648, -1, 0, 2147483647]) },
    "mask": { dtype: "U32" as const, shape: [2, 1], data: new Uint32Array([0, 4294967295]) },
    "step": { dtype: "I32" as const, shape: [], data: new Int32Array([42]) },
    "empty": { dtype: "F32" as const, shape: [0], data: new Float32Array(0) },
    "empty2d": { dtype: "U32" as const, shape: [3, 0], data: new Uint32Array(0) },
  };
  const metadata = { format: "pt", note: "ünïcode ✓", json: '{"epoch":3}' };
  const bytes = encodeSafetensors(entries, metadata);

  // Header: 8-byte aligned data start, names sorted, contiguous offsets.
  const { length, json } = headerOf(bytes);
  assert.equal(length % 8, 0);
  assert.deepEqual(json.__metadata__, metadata);
  const names = Object.keys(json).filter((k) => k !== "__metadata__");
  assert.deepEqual(names, [...names].sort());
  assert.deepEqual(json.weight, { dtype: "F32", shape: [2, 3], data_offsets: [28, 52] });

  const { tensors, metadata: meta } = decodeSafetensors(bytes, "rt.safetensors");
  assert.deepEqual(meta, metadata);
  assert.equal(tensors.size, 6);
  for (const [name, e] of Object.entries(entries)) {
    const t = tensors.get(name)!;
    assert.equal(t.dtype, e.dtype, name);
    assert.deepEqual(t.shape, e.shape, name);
    assert.equal(t.data.constructor, e.data.constructor, name);
    assert.deepEqual(Array.from(t.data), Array.from(e.data), name);
  }
  assert.ok(Object.is(tensors.get("weight")!.data[4], -0));

  // No tensors and no metadata is a valid (tiny) file too.
  const none = decodeSafetensors(encodeSafetensors({}), "none");
  assert.equal(none.tensors.size, 0);
  assert.deepEqual(none.metadata, {});
});

Deno.test("safetensors: subarray input and a file inside a larger buffer", () => {
  const backing = new Float32Array([9, 1, 2, 3, 9]);
  const bytes = encodeSafetensors({ x: { dtype: "F32", shape: [3], data: backing.subarray(1, 4) } });
  const shifted = new Uint8Array(bytes.length + 3);
  shifted.set(bytes, 3);
  const { tensors } = decodeSafetensors(shifted.subarray(3), "shifted");
  assert.deepEqual(Array.from(tensors.get("x")!.data), [1, 2, 3]);
});

Deno.test("safetensors: hand-built file with padding, metadata, F64, I64, F16, BF16 and U8", () => {
  const f32 = new Float32Array([0.5, -1.25]);
  const i64 = new BigInt64Array([-5n, 2147483647n, 12345n]);
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0xfc00, 0x3555, 0x8000, 0x7e00]);
  const bf16 = new Uint16Array([0x3f80, 0xc060, 0x0000]);
  const f64 = new Float64Array([Math.PI, -1e-3]);
  const u8 = new Uint8Array([0, 7, 255]);
  // Sizes: f32 8, i64 24, f16 18, bf16 6, f64 16, u8 3 = 75 bytes.
  const data = bytesOf(f32, i64, f16, bf16, f64, u8);
  // Header keys deliberately not in offset order; padded with spaces to 8 bytes.
  const header = {
    "bn.num_batches_tracked": { dtype: "I64", shape: [3], data_offsets: [8, 32] },
    "__metadata__": { format: "pt" },
    "u8": { dtype: "U8", shape: [3], data_offsets: [72, 75] },
    "w": { dtype: "F32", shape: [1, 2], data_offsets: [0, 8] },
    "h": { dtype: "F16", shape: [3, 3], data_offsets: [32, 50] },
    "b": { dtype: "BF16", shape: [3], data_offsets: [50, 56] },
    "d": { dtype: "F64", shape: [2, 1], data_offsets: [56, 72] },
  };
  const file = buildFile(header, data);
  assert.equal(headerOf(file).length % 8, 0);
  assert.ok(new TextDecoder().decode(file.subarray(8, 8 + headerOf(file).length)).endsWith(" "));

  const { tensors, metadata } = decodeSafetensors(file, "torch.safetensors");
  assert.deepEqual(metadata, { format: "pt" });
  assert.deepEqual([...tensors.keys()], ["w", "bn.num_batches_tracked", "h", "b", "d", "u8"]);

  const w = tensors.get("w")!;
  assert.deepEqual([w.dtype, w.shape, Array.from(w.data)], ["F32", [1, 2], [0.5, -1.25]]);

  const n = tensors.get("bn.num_batches_tracked")!;
  assert.ok(n.data instanceof Int32Array);
  assert.deepEqual([n.dtype, Array.from(n.data)], ["I64", [-5, 2147483647, 12345]]);

  const h = tensors.get("h")!;
  assert.ok(h.data instanceof Float32Array);
  const hv = Array.from(h.data);
  assert.deepEqual(hv.slice(0, 6), [1, -2, 65504, 2 ** -24, Infinity, -Infinity]);
  assert.ok(Math.abs(hv[6] - 1 / 3) < 1e-3);
  assert.ok(Object.is(hv[7], -0));
  assert.ok(Number.isNaN(hv[8]));

  const b = tensors.get("b")!;
  assert.deepEqual([b.dtype, Array.from(b.data)], ["BF16", [1, -3.5, 0]]);

  const d = tensors.get("d")!;
  assert.ok(d.data instanceof Float32Array);
  assert.deepEqual(Array.from(d.data), [Math.fround(Math.PI), Math.fround(-1e-3)]);

  const u = tensors.get("u8")!;
  assert.ok(u.data instanceof Uint32Array);
  assert.deepEqual(Array.from(u.data), [0, 7, 255]);

  // An unpadded header (other writers) is fine too.
  const unpadded = buildFile({ w: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }, bytesOf(f32), 1);
  assert.deepEqual(Array.from(decodeSafetensors(unpadded, "u").tensors.get("w")!.data), [0.5, -1.25]);
});

Deno.test("safetensors: halfToFloat matches exact binary16 values", () => {
  assert.equal(halfToFloat(0x3bff), 1 - 2 ** -11); // largest below 1
  assert.equal(halfToFloat(0x0400), 2 ** -14); // smallest normal
  assert.equal(halfToFloat(0x03ff), 1023 * 2 ** -24); // largest subnormal
});

Deno.test("safetensors: every corruption gives its specific error naming the file and entry", () => {
  const f32x2 = bytesOf(new Float32Array([1, 2]));
  const ok = { w: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
  const bad = (bytes: Uint8Array, re: RegExp) =>
    assert.throws(() => decodeSafetensors(bytes, "bad.safetensors"), re);

  bad(new Uint8Array(5), /^Error: bad\.safetensors: file is 5 bytes, shorter than the 8-byte header length/);
  bad(new Uint8Array(0), /bad\.safetensors: file is 0 bytes/);

  const tooLong = buildFile(ok, f32x2);
  new DataView(tooLong.buffer).setBigUint64(0, 1000n, true);
  bad(tooLong, /bad\.safetensors: header length 1000 exceeds the file \(\d+ bytes after the length field\)/);
  const huge = buildFile(ok, f32x2);
  new DataView(huge.buffer).setBigUint64(0, 2n ** 63n, true);
  bad(huge, /header length 9223372036854775808 exceeds the file/);

  bad(buildFile('{"w": {"dtype": "F32",', f32x2), /bad\.safetensors: header is not valid UTF-8 JSON/);
  bad(buildFile("[1, 2]", new Uint8Array(0)), /header must be a JSON object/);
  bad(
    buildFile({ __metadata__: { epoch: 3 } }, new Uint8Array(0)),
    /"__metadata__" value "epoch" must be a string/,
  );

  bad(
    buildFile({ w: { dtype: "Q4", shape: [2], data_offsets: [0, 8] } }, f32x2),
    /bad\.safetensors: tensor "w": unknown dtype "Q4" \(readable: F32, I32, U32, F64, I64, F16, BF16, U8\)/,
  );
  bad(buildFile({ w: { shape: [2], data_offsets: [0, 8] } }, f32x2), /tensor "w": unknown dtype undefined/);
  bad(
    buildFile({ w: { dtype: "F32", shape: [2.5], data_offsets: [0, 8] } }, f32x2),
    /tensor "w": shape \[2\.5\]/,
  );

  bad(
    buildFile({ w: { dtype: "F32", shape: [2, 3], data_offsets: [0, 8] } }, f32x2),
    /tensor "w": shape \[2, 3\] of F32 needs 24 bytes, but data_offsets \[0, 8\] span 8/,
  );

  bad(
    buildFile({ w: { dtype: "F32", shape: [0], data_offsets: [8, 4] } }, f32x2),
    /tensor "w": data_offsets \[8,4\] are out of range/,
  );
  bad(
    buildFile({ w: { dtype: "F32", shape: [2], data_offsets: [-8, 0] } }, f32x2),
    /tensor "w": data_offsets \[-8,0\] are out of range/,
  );
  bad(
    buildFile({ w: { dtype: "F32", shape: [2], data_offsets: [0] } }, f32x2),
    /data_offsets \[0\] are out of range/,
  );

  const two = bytesOf(new Float32Array([1, 2, 3, 4]));
  bad(
    buildFile({
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    }, two),
    /tensor "b": data_offsets \[4, 12\] overlap tensor "a" \(which ends at 8\)/,
  );
  bad(
    buildFile({
      a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
      b: { dtype: "F32", shape: [2], data_offsets: [8, 16] },
    }, two),
    /tensor "b": data_offsets \[8, 16\] leave a gap of 4 bytes after tensor "a"/,
  );
  bad(
    buildFile({ a: { dtype: "F32", shape: [2], data_offsets: [8, 16] } }, two),
    /tensor "a": .* gap of 8 bytes after the start of the data/,
  );

  bad(
    buildFile({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, f32x2),
    /bad\.safetensors: data is truncated: tensor "w" ends at byte 16 of the data but the file holds only 8/,
  );
  const full = encodeSafetensors({ w: { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) } });
  bad(full.subarray(0, full.length - 1), /data is truncated: tensor "w"/);
  bad(buildFile(ok, two), /8 unexpected bytes after the last tensor/);

  bad(
    buildFile(
      { n: { dtype: "I64", shape: [1], data_offsets: [0, 8] } },
      bytesOf(new BigInt64Array([2n ** 31n])),
    ),
    /tensor "n": I64 value 2147483648 at index 0 does not fit in int32/,
  );
  bad(
    buildFile({ d: { dtype: "F64", shape: [1], data_offsets: [0, 8] } }, bytesOf(new Float64Array([1e300]))),
    /tensor "d": F64 value 1e\+300 at index 0 overflows float32/,
  );
});

Deno.test("safetensors: encoder rejects inconsistent input", () => {
  assert.throws(
    () => encodeSafetensors({ w: { dtype: "F32", shape: [3], data: new Float32Array(2) } }),
    /tensor "w": shape \[3\] has 3 elements but the data has 2/,
  );
  assert.throws(
    () => encodeSafetensors({ w: { dtype: "I32", shape: [2], data: new Float32Array(2) } }),
    /tensor "w": dtype I32 needs a Int32Array, got Float32Array/,
  );
  assert.throws(
    () => encodeSafetensors({ __metadata__: { dtype: "F32", shape: [0], data: new Float32Array(0) } }),
    /"__metadata__" is reserved/,
  );
  assert.throws(
    () => encodeSafetensors({}, { epoch: 3 as unknown as string }),
    /metadata "epoch" is a number; safetensors metadata values must be strings/,
  );
});
