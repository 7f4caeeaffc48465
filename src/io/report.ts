/** Report writers: Markdown tables, JSON files (atomic) and JSON-lines logs. */
import { dirname } from "node:path";
import { writeFileAtomic } from "./atomic.ts";
import { parseJson, toJson } from "./json.ts";

export type Align = "left" | "right" | "center";

/** Cell text: numbers as they are for integers, 4 decimals otherwise; pipes escaped. */
function cellText(cell: string | number): string {
  const text = typeof cell === "number" ? (Number.isInteger(cell) ? String(cell) : cell.toFixed(4)) : cell;
  return text.replace(/\|/g, "\\|").replace(/\r?\n/g, " ");
}

/**
 * A GitHub-flavoured Markdown table with padded columns. Columns whose cells are all numbers are
 * right-aligned unless `align` says otherwise. Non-integer numbers get 4 decimals; format them
 * yourself (as strings) for anything else.
 */
export function markdownTable(
  headers: readonly string[],
  rows: readonly (readonly (string | number)[])[],
  align?: readonly Align[],
): string {
  rows.forEach((row, r) => {
    if (row.length !== headers.length) {
      throw new RangeError(
        `markdownTable: row ${r} has ${row.length} cells, the header has ${headers.length}`,
      );
    }
  });
  if (align && align.length !== headers.length) {
    throw new RangeError(`markdownTable: ${align.length} alignments for ${headers.length} columns`);
  }
  const alignment = headers.map((_, c) =>
    align?.[c] ?? (rows.length > 0 && rows.every((row) => typeof row[c] === "number") ? "right" : "left")
  );
  const cells = [headers.map(cellText), ...rows.map((row) => row.map(cellText))];
  const widths = headers.map((_, c) => Math.max(3, ...cells.map((row) => row[c].length)));
  const padCell = (text: string, c: number) => {
    const gap = widths[c] - text.length;
    if (alignment[c] === "right") return " ".repeat(gap) + text;
    if (alignment[c] === "center") return " ".repeat(gap >> 1) + text + " ".repeat(gap - (gap >> 1));
    return text + " ".repeat(gap);
  };
  const line = (row: string[]) => `| ${row.map(padCell).join(" | ")} |`;
  const rule = widths.map((w, c) => {
    const a = alignment[c];
    return (a === "center" ? ":" : "-") + "-".repeat(w - 2) + (a === "left" ? "-" : ":");
  });
  return [line(cells[0]), `| ${rule.join(" | ")} |`, ...cells.slice(1).map(line)].join("\n") + "\n";
}

/**
 * Writes `value` as pretty-printed JSON, atomically (temp file, fsync, rename). NaN and ±Infinity
 * are written as "NaN", "Infinity", "-Infinity" (io/json.ts): `readJson` reads them back.
 */
export async function writeJson(path: string, value: unknown): Promise<void> {
  const text = toJson(value, 2);
  if (text === undefined) throw new TypeError(`writeJson(${path}): value is not JSON-serialisable`);
  await writeFileAtomic(path, new TextEncoder().encode(text + "\n"));
}

/** A JSON file (as `writeJson` writes them); a missing or corrupt one is an error naming it. */
export async function readJson<T>(path: string): Promise<T> {
  try {
    return parseJson<T>(await Deno.readTextFile(path));
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Appends `value` as one line of JSON (a JSON-lines log), creating the file and its directory.
 * A torn last line (a process killed mid-append) is cut off first: glued to this line it would
 * make the log unreadable.
 */
export async function appendJsonLine(path: string, value: unknown): Promise<void> {
  const text = toJson(value);
  if (text === undefined) throw new TypeError(`appendJsonLine(${path}): value is not JSON-serialisable`);
  await Deno.mkdir(dirname(path), { recursive: true });
  await cutTornLine(path);
  await Deno.writeTextFile(path, text + "\n", { append: true, create: true });
}

/** Truncates a file that does not end with a newline after its last newline (rare: read whole). */
async function cutTornLine(path: string): Promise<void> {
  let bytes: Uint8Array;
  try {
    const file = await Deno.open(path, { read: true });
    try {
      const size = (await file.stat()).size;
      if (size === 0) return;
      await file.seek(size - 1, Deno.SeekMode.Start);
      const last = new Uint8Array(1);
      if ((await file.read(last)) !== 1 || last[0] === 0x0a) return;
    } finally {
      file.close();
    }
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  await Deno.truncate(path, bytes.lastIndexOf(0x0a) + 1);
}

/**
 * Reads a JSON-lines log. A torn last line (the process died mid-append) is skipped; a bad line
 * elsewhere is an error naming the line.
 */
export async function readJsonLines<T = unknown>(path: string): Promise<T[]> {
  const lines = (await Deno.readTextFile(path)).split("\n");
  const out: T[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === "") continue;
    try {
      out.push(parseJson(lines[i]));
    } catch (e) {
      if (i === lines.length - 1) break; // unterminated last line: an interrupted append
      throw new Error(`${path}:${i + 1}: invalid JSON line (${(e as Error).message})`);
    }
  }
  return out;
}
