/**
 * The Hugging Face safetensors format (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes]  N, the header length, unsigned 64-bit little-endian
 *   [N bytes]  UTF-8 JSON: { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] },
 *                            ..., "__metadata__": { "<key>": "<string value>" } }
 *              (the reference writer pads it with spaces so the data starts 8-byte aligned)
 *   [rest]     the tensors' raw little-endian bytes; offsets are relative to the start of this
 *              region, and the tensors tile it exactly: sorted, contiguous, no gaps, no overlaps.
 *
 * We write F32, I32 and U32 (the framework's dtypes). We read those and also F64, I64, F16, BF16 and
 * U8, converted to the framework's types, so PyTorch exports load directly (BatchNorm's
 * `num_batches_tracked` is int64, for instance).
 */
import type { DType } from "../tensor/dtype.ts";

/** Element types a safetensors file may hold that we can read. */
export type SafetensorsDType = "F32" | "I32" | "U32" | "F64" | "I64" | "F16" | "BF16" | "U8";

/** Element types we write. */
export type WritableDType = "F32" | "I32" | "U32";

export type HostArray = Float32Array<ArrayBuffer> | Int32Array<ArrayBuffer> | Uint32Array<ArrayBuffer>;

/** A tensor to encode. `data` must be the typed array matching `dtype` (Float32Array for F32, ...). */
export interface SafetensorsInput {
  dtype: WritableDType;
  shape: readonly number[];
  data: Float32Array | Int32Array | Uint32Array;
}

/**
 * A decoded tensor. `dtype` is the type stored in the file; `data` is already converted to the
 * framework's type given by `frameworkDType(dtype)` (F64/F16/BF16 -> f32, I64 -> i32, U8 -> u32).
 */
export interface SafetensorsTensor {
  dtype: SafetensorsDType;
  shape: number[];
  data: HostArray;
}

export interface DecodedSafetensors {
  tensors: Map<string, SafetensorsTensor>;
  metadata: Record<string, string>;
}

const ITEM_SIZE: Record<SafetensorsDType, number> = {
  F32: 4,
  I32: 4,
  U32: 4,
  F64: 8,
  I64: 8,
  F16: 2,
  BF16: 2,
  U8: 1,
};

const METADATA_KEY = "__metadata__";

/** The framework dtype a file dtype decodes to. */
export function frameworkDType(dtype: SafetensorsDType): DType {
  switch (dtype) {
    case "I32":
    case "I64":
      return "i32";
    case "U32":
    case "U8":
      return "u32";
    default:
      return "f32";
  }
}

/** The file dtype a framework dtype is written as. */
export function safetensorsDType(dtype: DType): WritableDType {
  return dtype === "f32" ? "F32" : dtype === "i32" ? "I32" : "U32";
}

/** Typed arrays are host-endian; safetensors is little-endian. Every platform Deno runs on is LE. */
function assertLittleEndianHost(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new Error("safetensors: big-endian hosts are not supported");
  }
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

// ---------------------------------------------------------------------------------------------
// Encoding

/**
 * Encodes tensors (written sorted by name) and optional string metadata into safetensors bytes.
 * The header is space-padded so that the data region starts at an 8-byte boundary.
 */
export function encodeSafetensors(
  entries: Record<string, SafetensorsInput>,
  metadata?: Record<string, string>,
): Uint8Array<ArrayBuffer> {
  assertLittleEndianHost();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string") {
        throw new TypeError(
          `encodeSafetensors: metadata "${key}" is a ${typeof value}; safetensors metadata values ` +
            `must be strings (JSON.stringify it)`,
        );
      }
    }
    header[METADATA_KEY] = metadata;
  }
  const names = Object.keys(entries).sort();
  let offset = 0;
  for (const name of names) {
    if (name === METADATA_KEY) {
      throw new Error(`encodeSafetensors: "${METADATA_KEY}" is reserved for metadata; rename the tensor`);
    }
    const { dtype, shape, data } = entries[name];
    const expected = dtype === "F32"
      ? Float32Array
      : dtype === "I32"
      ? Int32Array
      : dtype === "U32"
      ? Uint32Array
      : null;
    if (!expected) {
      throw new Error(
        `encodeSafetensors: tensor "${name}": cannot write dtype ${dtype} (use F32, I32 or U32)`,
      );
    }
    if (!(data instanceof expected)) {
      throw new TypeError(
        `encodeSafetensors: tensor "${name}": dtype ${dtype} needs a ${expected.name}, got ${
          (data as object)?.constructor?.name
        }`,
      );
    }
    if (!shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new Error(`encodeSafetensors: tensor "${name}": invalid shape ${fmtShape(shape)}`);
    }
    if (elementCount(shape) !== data.length) {
      throw new Error(
        `encodeSafetensors: tensor "${name}": shape ${fmtShape(shape)} has ${elementCount(shape)} ` +
          `elements but the data has ${data.length}`,
      );
    }
    header[name] = { dtype, shape: [...shape], data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }

  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const withSpaces = new Uint8Array(padded).fill(0x20);
    withSpaces.set(json);
    json = withSpaces;
  }

  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const name of names) {
    const { data } = entries[name];
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding

interface RawEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Decodes and validates safetensors bytes. `fileName` is only used in error messages. Every
 * structural problem throws an Error naming the file, the entry and what to do about it.
 */
export function decodeSafetensors(bytes: Uint8Array, fileName = "<bytes>"): DecodedSafetensors {
  assertLittleEndianHost();
  const fail = (message: string): never => {
    throw new Error(`${fileName}: ${message}`);
  };

  if (bytes.length < 8) {
    fail(
      `file is ${bytes.length} bytes, shorter than the 8-byte header length; it is empty or truncated ` +
        `(re-save or re-download it)`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getBigUint64(0, true);
  if (headerLength > BigInt(bytes.length - 8)) {
    fail(
      `header length ${headerLength} exceeds the file (${bytes.length - 8} bytes after the length field); ` +
        `the file is truncated or is not a safetensors file`,
    );
  }
  const dataStart = 8 + Number(headerLength);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, dataStart)));
  } catch (e) {
    fail(`header is not valid UTF-8 JSON (${(e as Error).message}); the file is corrupt or not safetensors`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    fail(`header must be a JSON object mapping tensor names to entries`);
  }

  // Metadata: an optional object of strings.
  const metadata: Record<string, string> = {};
  const rawMetadata = (header as Record<string, unknown>)[METADATA_KEY];
  if (rawMetadata !== undefined) {
    if (typeof rawMetadata !== "object" || rawMetadata === null || Array.isArray(rawMetadata)) {
      fail(`"${METADATA_KEY}" must be an object of strings`);
    }
    for (const [key, value] of Object.entries(rawMetadata as Record<string, unknown>)) {
      if (typeof value !== "string") {
        fail(`"${METADATA_KEY}" value "${key}" must be a string, got ${typeof value}`);
      }
      metadata[key] = value as string;
    }
  }

  // Entries: check each one on its own.
  const dataLength = bytes.length - dataStart;
  const entries: RawEntry[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA_KEY) continue;
    const where = `tensor "${name}"`;
    if (typeof raw !== "object" || raw === null) fail(`${where}: entry must be an object`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== "string" || !(dtype in ITEM_SIZE)) {
      fail(
        `${where}: unknown dtype ${JSON.stringify(dtype)} (readable: ${
          Object.keys(ITEM_SIZE).join(", ")
        }); ` +
          `convert the tensor to float32 before saving`,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`${where}: shape ${JSON.stringify(shape)} must be an array of integers >= 0`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]
    ) {
      fail(
        `${where}: data_offsets ${JSON.stringify(offsets)} are out of range: they must be ` +
          `[begin, end] with 0 <= begin <= end`,
      );
    }
    const [begin, end] = offsets as number[];
    const itemSize = ITEM_SIZE[dtype as SafetensorsDType];
    const needed = elementCount(shape as number[]) * itemSize;
    if (needed !== end - begin) {
      fail(
        `${where}: shape ${fmtShape(shape as number[])} of ${dtype} needs ${needed} bytes, but ` +
          `data_offsets [${begin}, ${end}] span ${end - begin}; the header is inconsistent`,
      );
    }
    entries.push({ name, dtype: dtype as SafetensorsDType, shape: shape as number[], begin, end });
  }

  // Layout: sorted by offset, the entries must tile [0, dataLength) exactly.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous = "";
  for (const e of entries) {
    if (e.begin < cursor) {
      fail(
        `tensor "${e.name}": data_offsets [${e.begin}, ${e.end}] overlap tensor "${previous}" ` +
          `(which ends at ${cursor}); the header is corrupt`,
      );
    }
    if (e.begin > cursor) {
      fail(
        `tensor "${e.name}": data_offsets [${e.begin}, ${e.end}] leave a gap of ${e.begin - cursor} ` +
          `bytes after ${previous ? `tensor "${previous}"` : "the start of the data"} (offset ${cursor}); ` +
          `tensors must be contiguous`,
      );
    }
    cursor = e.end;
    previous = e.name;
  }
  if (cursor > dataLength) {
    const last = entries[entries.length - 1];
    fail(
      `data is truncated: tensor "${last.name}" ends at byte ${cursor} of the data but the file holds ` +
        `only ${dataLength} data bytes; the file was cut short (re-save or re-download it)`,
    );
  }
  if (cursor < dataLength) {
    fail(
      `${dataLength - cursor} unexpected bytes after the last tensor (data ends at ${cursor}, file ` +
        `holds ${dataLength}); the header does not describe the whole file`,
    );
  }

  // Convert, in data (offset) order.
  const tensors = new Map<string, SafetensorsTensor>();
  for (const e of entries) {
    const raw = bytes.slice(dataStart + e.begin, dataStart + e.end); // an aligned copy
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: convert(e, raw.buffer, fail) });
  }
  return { tensors, metadata };
}

/** Converts an entry's raw little-endian bytes to the framework's typed array. */
function convert(e: RawEntry, buffer: ArrayBuffer, fail: (message: string) => never): HostArray {
  switch (e.dtype) {
    case "F32":
      return new Float32Array(buffer);
    case "I32":
      return new Int32Array(buffer);
    case "U32":
      return new Uint32Array(buffer);
    case "U8":
      return Uint32Array.from(new Uint8Array(buffer));
    case "F64": {
      const src = new Float64Array(buffer);
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) {
        out[i] = src[i];
        if (Number.isFinite(src[i]) && !Number.isFinite(out[i])) {
          fail(`tensor "${e.name}": F64 value ${src[i]} at index ${i} overflows float32`);
        }
      }
      return out;
    }
    case "I64": {
      const src = new BigInt64Array(buffer);
      const out = new Int32Array(src.length);
      for (let i = 0; i < src.length; i++) {
        const v = src[i];
        if (v < -2147483648n || v > 2147483647n) {
          fail(
            `tensor "${e.name}": I64 value ${v} at index ${i} does not fit in int32; ` +
              `the framework stores integers as i32`,
          );
        }
        out[i] = Number(v);
      }
      return out;
    }
    case "F16": {
      const src = new Uint16Array(buffer);
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = halfToFloat(src[i]);
      return out;
    }
    case "BF16": {
      // bfloat16 is the top half of a float32: shift the bits back into place.
      const src = new Uint16Array(buffer);
      const bits = new Uint32Array(src.length);
      for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
      return new Float32Array(bits.buffer);
    }
  }
}

/** IEEE 754 binary16 -> number: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}
