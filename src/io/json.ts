/**
 * JSON for this project's files (results, logs, checkpoint metadata) that keeps every number.
 *
 * JSON has no literal for NaN or ±Infinity, and `JSON.stringify` writes them as `null`: a
 * diverged loss would read back as null (or as 0 once it reaches a tensor). `toJson` writes
 * them as the strings "NaN", "Infinity" and "-Infinity" (the spelling of Python's and
 * JavaScript's own number printing), and `parseJson` turns exactly those strings back into
 * numbers. Typed arrays are written as plain arrays and bigints as numbers.
 */

const NON_FINITE: Record<string, number> = { "NaN": NaN, "Infinity": Infinity, "-Infinity": -Infinity };

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "number") return Number.isFinite(value) ? value : String(value);
  if (typeof value === "bigint") return Number(value);
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    // Through the replacer again: a Float32Array may hold NaN.
    return Array.from(value as unknown as ArrayLike<number>);
  }
  return value;
}

function reviver(_key: string, value: unknown): unknown {
  return typeof value === "string" && Object.hasOwn(NON_FINITE, value) ? NON_FINITE[value] : value;
}

/** `JSON.stringify` keeping non-finite numbers (see above); undefined for an unserialisable value. */
export function toJson(value: unknown, indent?: number): string | undefined {
  return JSON.stringify(value, replacer, indent);
}

/** `JSON.parse` that reads back what `toJson` wrote, non-finite numbers included. */
export function parseJson<T = unknown>(text: string): T {
  return JSON.parse(text, reviver) as T;
}
