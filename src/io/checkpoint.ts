/**
 * Checkpoints: named tensors plus JSON metadata in a safetensors file.
 *
 * Saving is atomic: the bytes go to a temporary file next to the target, are flushed to disk
 * (fsync), and only then renamed over the target. rename() within a directory is atomic on POSIX
 * file systems, so after a crash the path holds either the previous checkpoint or the new one,
 * never half of one. Checkpoints are taken between training steps, so reading tensors back from
 * the GPU here is fine.
 */
import type { DType } from "../tensor/dtype.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { writeFileAtomic } from "./atomic.ts";
import { parseJson, toJson } from "./json.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  frameworkDType,
  type HostArray,
  type SafetensorsDType,
  safetensorsDType,
  type SafetensorsInput,
} from "./safetensors.ts";

/** A tensor loaded from a checkpoint, on the host. */
export interface HostTensor {
  /** The framework dtype of `data`. */
  dtype: DType;
  /** The dtype stored in the file (e.g. I64 for PyTorch's num_batches_tracked). */
  fileDType: SafetensorsDType;
  shape: number[];
  data: HostArray;
}

export interface Checkpoint {
  path: string;
  tensors: Map<string, HostTensor>;
  /** Metadata values, JSON-decoded (strings that are not JSON, as in foreign files, stay strings). */
  metadata: Record<string, unknown>;
}

export interface CheckpointContents {
  tensors: Record<string, Tensor>;
  metadata?: Record<string, unknown>;
}

/**
 * Saves tensors (read back from the GPU) and metadata (each value JSON-encoded into the
 * safetensors `__metadata__` strings, NaN and ±Infinity kept: io/json.ts) to `path`, atomically.
 */
export async function saveCheckpoint(path: string, contents: CheckpointContents): Promise<void> {
  const entries: Record<string, SafetensorsInput> = {};
  for (const [name, tensor] of Object.entries(contents.tensors)) {
    if (tensor.isDisposed) {
      throw new Error(
        `saveCheckpoint(${path}): tensor "${name}" was disposed before saving; keep() the parameters ` +
          `and optimizer state you checkpoint`,
      );
    }
    entries[name] = {
      dtype: safetensorsDType(tensor.dtype),
      shape: tensor.shape,
      data: await tensor.toArray(),
    };
  }
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(contents.metadata ?? {})) {
    const json = toJson(value);
    if (json === undefined) {
      throw new TypeError(
        `saveCheckpoint(${path}): metadata "${key}" (${typeof value}) is not JSON-serialisable`,
      );
    }
    metadata[key] = json;
  }
  await writeFileAtomic(path, encodeSafetensors(entries, metadata));
}

/** Reads a checkpoint (or any safetensors file) into host arrays. */
export async function loadCheckpoint(path: string): Promise<Checkpoint> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`loadCheckpoint: no checkpoint at ${path} (no such file; check the path)`, {
        cause: e,
      });
    }
    throw new Error(`loadCheckpoint: could not read ${path}: ${(e as Error).message}`, { cause: e });
  }
  const decoded = decodeSafetensors(bytes, path);
  const tensors = new Map<string, HostTensor>();
  for (const [name, t] of decoded.tensors) {
    tensors.set(name, { dtype: frameworkDType(t.dtype), fileDType: t.dtype, shape: t.shape, data: t.data });
  }
  const metadata: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(decoded.metadata)) {
    try {
      metadata[key] = parseJson(value);
    } catch {
      metadata[key] = value; // plain-string metadata from other writers ({"format": "pt"})
    }
  }
  return { path, tensors, metadata };
}

export interface LoadOptions {
  /**
   * When true (default), tensors missing from the file and tensors in the file the model does not
   * have are errors. When false they are skipped (and listed in the result), as with PyTorch's
   * `load_state_dict(strict=False)`; shape and dtype mismatches are always errors.
   */
  strict?: boolean;
}

export interface LoadResult {
  loaded: string[];
  missing: string[];
  unexpected: string[];
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(",")}]`;
}

/**
 * Copies a checkpoint's data into existing tensors (parameters, buffers, optimizer state), after
 * checking every name, shape and dtype. All problems are reported together in one error.
 */
export function loadIntoTensors(
  checkpoint: Checkpoint,
  expected: Record<string, Tensor>,
  { strict = true }: LoadOptions = {},
): LoadResult {
  const missing: string[] = [];
  const unexpected: string[] = [];
  const problems: string[] = [];
  const loads: [Tensor, HostArray][] = [];
  const loaded: string[] = [];

  for (const [name, tensor] of Object.entries(expected)) {
    const entry = checkpoint.tensors.get(name);
    if (!entry) {
      missing.push(name);
      if (strict) {
        problems.push(`${name}: missing from the file (model has ${tensor.dtype}${fmtShape(tensor.shape)})`);
      }
      continue;
    }
    if (tensor.isDisposed) {
      problems.push(`${name}: the model's tensor was disposed`);
      continue;
    }
    const shapeOk = entry.shape.length === tensor.shape.length &&
      entry.shape.every((d, i) => d === tensor.shape[i]);
    if (!shapeOk) {
      problems.push(`${name}: shape ${fmtShape(entry.shape)} in file, ${fmtShape(tensor.shape)} in model`);
    } else if (entry.dtype !== tensor.dtype) {
      problems.push(`${name}: dtype ${entry.fileDType} (${entry.dtype}) in file, ${tensor.dtype} in model`);
    } else {
      loads.push([tensor, entry.data]);
      loaded.push(name);
    }
  }
  for (const name of checkpoint.tensors.keys()) {
    if (!Object.hasOwn(expected, name)) {
      unexpected.push(name);
      if (strict) {
        const entry = checkpoint.tensors.get(name)!;
        problems.push(
          `${name}: in the file (${entry.fileDType}${fmtShape(entry.shape)}) but not in the model`,
        );
      }
    }
  }
  if (problems.length > 0) {
    throw new Error(
      `loadIntoTensors(${checkpoint.path}): the checkpoint does not match the model ` +
        `(${problems.length} problem${problems.length > 1 ? "s" : ""}; was it saved from another ` +
        `architecture or configuration?${
          strict ? " strict: false skips missing/unexpected names" : ""
        }):\n  ` +
        problems.join("\n  "),
    );
  }
  for (const [tensor, data] of loads) {
    if (data.length > 0) tensor.gpu.write(tensor.buffer, data);
  }
  return { loaded, missing, unexpected };
}
