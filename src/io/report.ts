/** Report writers: Markdown tables, JSON files (atomic) and JSON-lines logs. */
import { dirname } from "node:path";
import { writeFileAtomic } from "./checkpoint.ts";

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

/** JSON.stringify replacer: typed arrays as plain arrays, bigints as numbers. */
function replacer(_key: string, value: unknown): unknown {
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    return Array.from(value as unknown as number[]);
  }
  if (typeof value === "bigint") return Number(value);
  return value;
}

/** Writes `value` as pretty-printed JSON, atomically (temp file, fsync, rename). */
export async function writeJson(path: string, value: unknown): Promise<void> {
  const text = JSON.stringify(value, replacer, 2);
  if (text === undefined) throw new TypeError(`writeJson(${path}): value is not JSON-serialisable`);
  await writeFileAtomic(path, new TextEncoder().encode(text + "\n"));
}

/** Appends `value` as one line of JSON (a JSON-lines log), creating the file and its directory. */
export async function appendJsonLine(path: string, value: unknown): Promise<void> {
  const text = JSON.stringify(value, replacer);
  if (text === undefined) throw new TypeError(`appendJsonLine(${path}): value is not JSON-serialisable`);
  await Deno.mkdir(dirname(path), { recursive: true });
  await Deno.writeTextFile(path, text + "\n", { append: true, create: true });
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
      out.push(JSON.parse(lines[i]));
    } catch (e) {
      if (i === lines.length - 1) break; // unterminated last line: an interrupted append
      throw new Error(`${path}:${i + 1}: invalid JSON line (${(e as Error).message})`);
    }
  }
  return out;
}
