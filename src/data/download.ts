/**
 * Downloading CIFAR-10/100: fetch the official tarball into a temporary file (streamed, with
 * progress), verify its MD5, gunzip it (DecompressionStream) and extract it with a minimal ustar
 * reader, then check every data file's size. Nothing is trusted half-way: the archive becomes
 * `<name>.tar.gz` only after its checksum matched, and each extracted file is written as
 * `<file>.part` and renamed when complete.
 */
import { createHash } from "node:crypto";
import { CIFAR_FORMATS, CIFAR_PIXELS, type CifarName } from "./cifar.ts";
import { DatasetError } from "./dataset.ts";

export interface DownloadProgress {
  /** Bytes received so far. */
  bytes: number;
  /** Total bytes (from Content-Length), or null when the server does not say. */
  total: number | null;
  /** 0..100, or null when the total is unknown. */
  percent: number | null;
  /** True on the last call, once the whole body has arrived. */
  done: boolean;
}

export interface DownloadOptions {
  /** Where to fetch the tarball from (default: the official URL). */
  url?: string;
  /** Expected MD5 of the tarball (default: the official checksum). */
  md5?: string;
  /** fetch() to use (tests, proxies). Deno's fetch also reads file:// URLs. */
  fetchImpl?: typeof fetch;
  /** Called as bytes arrive; default: a progress line on stderr (unless `quiet`). */
  onProgress?: (p: DownloadProgress) => void;
  quiet?: boolean;
  /** Keep the .tar.gz after extraction (default: delete it). */
  keepArchive?: boolean;
  /** Tests only: every data file holds exactly this many records (see CifarOptions). */
  expectedRecords?: number;
}

/** Expected size of every data file of `which` (official counts, or the test override). */
function expectedFiles(which: CifarName, expectedRecords?: number): { name: string; bytes: number }[] {
  const f = CIFAR_FORMATS[which];
  const recordBytes = f.labelBytes + CIFAR_PIXELS;
  return [...f.files.train, ...f.files.test].map((file) => ({
    name: file.name,
    bytes: (expectedRecords ?? file.records) * recordBytes,
  }));
}

async function fileSize(path: string): Promise<number | null> {
  try {
    const s = await Deno.stat(path);
    return s.isFile ? s.size : null;
  } catch {
    return null;
  }
}

/** The problems of an extracted folder, or [] when every data file has its exact size. */
async function checkExtracted(which: CifarName, folder: string, expectedRecords?: number): Promise<string[]> {
  const problems: string[] = [];
  for (const file of expectedFiles(which, expectedRecords)) {
    const size = await fileSize(`${folder}/${file.name}`);
    if (size === null) problems.push(`${folder}/${file.name} is missing`);
    else if (size !== file.bytes) {
      problems.push(`${folder}/${file.name} has ${size} bytes, expected ${file.bytes}`);
    }
  }
  return problems;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

function formatBytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`;
}

/** Default progress: one rewritten stderr line, at most every 0.5 s. */
function stderrProgress(label: string): (p: DownloadProgress) => void {
  let last = 0;
  const encoder = new TextEncoder();
  return (p) => {
    const now = performance.now();
    if (now - last < 500 && !p.done) return;
    last = now;
    const pct = p.percent === null ? "" : ` (${p.percent.toFixed(1)} %)`;
    const total = p.total === null ? "" : ` of ${formatBytes(p.total)}`;
    Deno.stderr.writeSync(
      encoder.encode(`\r${label}: ${formatBytes(p.bytes)}${total}${pct}${p.done ? "\n" : ""}`),
    );
  };
}

/** MD5 of a file, streamed. */
export async function md5File(path: string): Promise<string> {
  const hash = createHash("md5");
  const file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

/**
 * Streams `url` into `path` (via `path.part`), hashing as it goes; returns the MD5 (hex).
 * The .part file is removed if the transfer fails.
 */
async function fetchToFile(
  url: string,
  path: string,
  fetchImpl: typeof fetch,
  onProgress: (p: DownloadProgress) => void,
): Promise<string> {
  let response: Response;
  try {
    response = await fetchImpl(url);
  } catch (e) {
    throw new DatasetError(`download of ${url} failed: ${(e as Error).message}`);
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    throw new DatasetError(`download of ${url} failed: HTTP ${response.status} ${response.statusText}`);
  }
  const length = Number(response.headers.get("content-length"));
  const total = Number.isFinite(length) && length > 0 ? length : null;
  const part = `${path}.part`;
  const hash = createHash("md5");
  const file = await Deno.open(part, { write: true, create: true, truncate: true });
  let bytes = 0;
  try {
    for await (const chunk of response.body) {
      hash.update(chunk);
      await writeAll(file, chunk);
      bytes += chunk.length;
      onProgress({ bytes, total, percent: total ? (100 * bytes) / total : null, done: false });
    }
  } catch (e) {
    file.close();
    await Deno.remove(part).catch(() => {});
    throw new DatasetError(`download of ${url} failed after ${bytes} bytes: ${(e as Error).message}`);
  }
  file.close();
  onProgress({ bytes, total, percent: total ? (100 * bytes) / total : null, done: true });
  if (total !== null && bytes !== total) {
    await Deno.remove(part).catch(() => {});
    throw new DatasetError(`download of ${url} stopped at ${bytes} of ${total} bytes: try again`);
  }
  await Deno.rename(part, path);
  return hash.digest("hex");
}

// ---------------------------------------------------------------------------------------------
// A minimal tar (ustar) reader
// ---------------------------------------------------------------------------------------------

/** Reads exact byte counts from a stream of chunks. */
class ByteReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffer: Uint8Array = new Uint8Array(0);
  #done = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  async #fill(): Promise<boolean> {
    if (this.#done) return false;
    const { value, done } = await this.#reader.read();
    if (done) {
      this.#done = true;
      return false;
    }
    this.#buffer = this.#buffer.length ? concat(this.#buffer, value) : value;
    return true;
  }

  /** Exactly n bytes, or null at the end of the stream. Throws on a partial block. */
  async read(n: number): Promise<Uint8Array | null> {
    while (this.#buffer.length < n) {
      if (!(await this.#fill())) {
        if (this.#buffer.length === 0) return null;
        throw new Error(`unexpected end of data (${this.#buffer.length} of ${n} bytes)`);
      }
    }
    const out = this.#buffer.subarray(0, n);
    this.#buffer = this.#buffer.subarray(n);
    return out;
  }

  /** Up to `n` bytes in pieces as they arrive (for streaming large file bodies to disk). */
  async *pieces(n: number): AsyncGenerator<Uint8Array> {
    while (n > 0) {
      if (this.#buffer.length === 0 && !(await this.#fill())) {
        throw new Error(`unexpected end of data (${n} bytes missing)`);
      }
      const piece = this.#buffer.subarray(0, Math.min(n, this.#buffer.length));
      this.#buffer = this.#buffer.subarray(piece.length);
      n -= piece.length;
      yield piece;
    }
  }

  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

const BLOCK = 512;

function cString(block: Uint8Array, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const end = field.indexOf(0);
  return new TextDecoder().decode(end < 0 ? field : field.subarray(0, end));
}

function octal(block: Uint8Array, start: number, length: number): number {
  if (block[start] & 0x80) {
    // GNU base-256 encoding for large sizes: big-endian in the remaining bytes.
    let v = block[start] & 0x7f;
    for (let i = 1; i < length; i++) v = v * 256 + block[start + i];
    return v;
  }
  const text = cString(block, start, length).trim();
  return text === "" ? 0 : parseInt(text, 8);
}

export interface TarEntry {
  /** Path inside the archive. */
  name: string;
  size: number;
}

/**
 * A pax extended header's records, `"<length> <key>=<value>\n"` each (POSIX.1-2001): the
 * `path` and `size` that override the next entry's header fields.
 */
function paxRecords(body: Uint8Array): { path?: string; size?: number } {
  const out: { path?: string; size?: number } = {};
  const decoder = new TextDecoder();
  for (let at = 0; at < body.length && body[at] !== 0;) {
    const space = body.indexOf(0x20, at);
    const length = space < 0 ? NaN : parseInt(decoder.decode(body.subarray(at, space)), 10);
    if (!(length > 0) || at + length > body.length || body[at + length - 1] !== 0x0a) {
      throw new Error(`corrupt pax header record at byte ${at}`);
    }
    const record = decoder.decode(body.subarray(space + 1, at + length - 1));
    const eq = record.indexOf("=");
    const [key, value] = [record.slice(0, eq), record.slice(eq + 1)];
    if (key === "path") out.path = value;
    if (key === "size") out.size = Number(value);
    at += length;
  }
  return out;
}

/**
 * Extracts the regular files and folders of a tar stream into `destDir`; other entries
 * (links, devices) are skipped. Understands ustar names with a prefix, GNU long names (`L`) and
 * pax extended headers (`x`: the next entry's `path` and `size`; global `g` headers are
 * skipped). Refuses absolute paths and `..`. Returns the extracted files. A file is written as
 * `<name>.part` and renamed when complete; a failure removes the partial file.
 */
export async function extractTar(stream: ReadableStream<Uint8Array>, destDir: string): Promise<TarEntry[]> {
  const reader = new ByteReader(stream);
  const entries: TarEntry[] = [];
  let longName: string | null = null;
  let pax: { path?: string; size?: number } = {};
  let partial: string | null = null;
  try {
    while (true) {
      const header = await reader.read(BLOCK);
      if (header === null || header.every((b) => b === 0)) break; // end-of-archive marker
      let sum = 0;
      for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i];
      if (sum !== octal(header, 148, 8)) throw new Error("corrupt tar header (checksum mismatch)");
      const type = String.fromCharCode(header[156] || 48); // NUL means a regular file
      const size = type === "x" || type === "g" || type === "L"
        ? octal(header, 124, 12)
        : pax.size ?? octal(header, 124, 12);
      const padded = Math.ceil(size / BLOCK) * BLOCK;
      const prefix = cString(header, 257, 6) === "ustar" ? cString(header, 345, 155) : "";
      const name = pax.path ?? longName ??
        (prefix ? `${prefix}/${cString(header, 0, 100)}` : cString(header, 0, 100));

      if (type === "L" || type === "x") {
        const body = await reader.read(padded);
        if (!body) throw new Error(`unexpected end of data in a ${type === "L" ? "long-name" : "pax"} entry`);
        if (type === "L") longName = cString(body, 0, size);
        else pax = paxRecords(body.subarray(0, size));
        continue;
      }
      if (type !== "g") [longName, pax] = [null, {}];
      const written = type === "0" || type === "7" || type === "5";
      const parts = name.split("/").filter((p) => p !== "" && p !== ".");
      // Only entries that are written are checked: a skipped one (a global pax header, named
      // like $TMPDIR/GlobalHead.1.1 by GNU tar) may have any name. A file must name something
      // inside destDir ("./" alone would write next to it).
      if (written && (name.startsWith("/") || parts.includes("..") || (type !== "5" && parts.length === 0))) {
        throw new Error(`unsafe path in archive: ${name}`);
      }
      const target = [destDir, ...parts].join("/");
      if (type === "5") {
        await Deno.mkdir(target, { recursive: true });
      } else if (type === "0" || type === "7") {
        if (parts.length > 1) {
          await Deno.mkdir([destDir, ...parts.slice(0, -1)].join("/"), { recursive: true });
        }
        partial = `${target}.part`;
        const file = await Deno.open(partial, { write: true, create: true, truncate: true });
        try {
          for await (const piece of reader.pieces(size)) await writeAll(file, piece);
        } finally {
          file.close();
        }
        await Deno.rename(partial, target);
        partial = null;
        entries.push({ name: parts.join("/"), size });
        for await (const _ of reader.pieces(padded - size)) { /* padding */ }
        continue;
      }
      for await (const _ of reader.pieces(padded)) { /* skipped entry (pax header, link, ...) */ }
    }
  } catch (e) {
    if (partial) await Deno.remove(partial).catch(() => {});
    await reader.cancel();
    throw e;
  }
  await reader.cancel();
  return entries;
}

// ---------------------------------------------------------------------------------------------

/**
 * Downloads, verifies and extracts CIFAR-10 or CIFAR-100 into `destDir`; returns the data folder
 * (`destDir/cifar-10-batches-bin` or `destDir/cifar-100-binary`). Does nothing if that folder is
 * already complete, and skips the fetch if a verified tarball is already there.
 */
export async function downloadCifar(
  which: CifarName,
  destDir: string,
  options: DownloadOptions = {},
): Promise<string> {
  const f = CIFAR_FORMATS[which];
  if (!f) {
    throw new DatasetError(`downloadCifar: unknown dataset ${JSON.stringify(which)} (cifar10 or cifar100)`);
  }
  const url = options.url ?? f.url;
  const md5 = (options.md5 ?? f.md5).toLowerCase();
  const folder = `${destDir}/${f.folder}`;
  if ((await checkExtracted(which, folder, options.expectedRecords)).length === 0) return folder;

  await Deno.mkdir(destDir, { recursive: true });
  const path = new URL(url).pathname;
  const archive = `${destDir}/${path.slice(path.lastIndexOf("/") + 1) || `${which}.tar.gz`}`;
  const onProgress = options.onProgress ?? (options.quiet ? () => {} : stderrProgress(`${f.title} ${url}`));
  let actual = (await fileSize(archive)) !== null ? await md5File(archive) : null;
  if (actual !== md5) {
    actual = await fetchToFile(url, archive, options.fetchImpl ?? fetch, onProgress);
  }
  if (actual !== md5) {
    const aside = `${archive}.bad-md5`;
    await Deno.rename(archive, aside);
    throw new DatasetError(
      `${f.title}: checksum mismatch for ${url}: md5 ${actual}, expected ${md5}. The download is ` +
        `corrupt or not the official file; it was kept aside as ${aside} (delete it) — try again, ` +
        `or fetch ${f.url} by hand`,
    );
  }

  const file = await Deno.open(archive);
  try {
    await extractTar(file.readable.pipeThrough(new DecompressionStream("gzip")), destDir);
  } catch (e) {
    throw new DatasetError(
      `${f.title}: extracting ${archive} failed: ${(e as Error).message} (it must be one gzip ` +
        `stream holding a tar archive, as the official file; or extract it by hand: ` +
        `tar xzf ${archive} -C ${destDir})`,
    );
  }
  const problems = await checkExtracted(which, folder, options.expectedRecords);
  if (problems.length) {
    throw new DatasetError(
      `${f.title}: ${archive} did not contain the expected files: ${problems.join("; ")}`,
    );
  }
  if (!options.keepArchive) await Deno.remove(archive);
  return folder;
}
