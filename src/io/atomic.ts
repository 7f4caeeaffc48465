/**
 * Atomic file writes: a reader (or a run resumed after a kill) sees the old file or the new one,
 * never half of one.
 */
import { basename, dirname, join } from "node:path";

/**
 * Writes `bytes` to `path` atomically: a temp file in the same directory (a rename across file
 * systems is not atomic), written in full, fsynced, renamed over `path`, then the directory
 * fsynced so that the rename itself is durable. On any failure the temp file is removed and the
 * previous file at `path` is untouched. Creates missing parent directories. Temp files of
 * `path` left by a writer that was killed mid-write are removed after the rename: those untouched
 * for `STALE_TEMP_MS`, so that another process writing the same path at the same time (two runs
 * filling one dataset cache) keeps its temp file.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const dir = dirname(path);
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (e) {
    throw new Error(`could not write ${path}: cannot create its folder ${dir} (${(e as Error).message})`, {
      cause: e,
    });
  }
  const random = crypto.getRandomValues(new Uint8Array(6));
  const prefix = `${basename(path)}.tmp-`;
  const temp = join(dir, prefix + Array.from(random, (b) => b.toString(16).padStart(2, "0")).join(""));
  let file: Deno.FsFile | null = null;
  try {
    file = await Deno.open(temp, { write: true, createNew: true });
    for (let written = 0; written < bytes.length;) {
      written += await file.write(bytes.subarray(written));
    }
    await file.sync();
    file.close();
    file = null;
    await Deno.rename(temp, path);
  } catch (e) {
    try {
      file?.close();
    } catch { /* already closed */ }
    await Deno.remove(temp).catch(() => {});
    throw new Error(`could not write ${path}: ${(e as Error).message}`, { cause: e });
  }
  // Best effort: some file systems do not allow opening or syncing directories.
  try {
    const handle = await Deno.open(dir, { read: true });
    try {
      await handle.sync();
    } finally {
      handle.close();
    }
  } catch { /* the data itself is already on disk */ }
  await removeStaleTemps(dir, prefix);
}

/**
 * Age after which a temp file counts as a killed writer's: a live writer touches its temp file
 * until it renames it, seconds after it started, even for a large checkpoint.
 */
export const STALE_TEMP_MS = 10 * 60 * 1000;

/** Removes `<name>.tmp-<12 hex>` files of a killed writer (best effort). */
async function removeStaleTemps(dir: string, prefix: string): Promise<void> {
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (
        !entry.isFile || !entry.name.startsWith(prefix) ||
        !/^[0-9a-f]{12}$/.test(entry.name.slice(prefix.length))
      ) continue;
      const path = join(dir, entry.name);
      const modified = (await Deno.stat(path).catch(() => null))?.mtime?.getTime();
      if (modified !== undefined && Date.now() - modified > STALE_TEMP_MS) {
        await Deno.remove(path).catch(() => {});
      }
    }
  } catch { /* an unreadable folder keeps its temp files */ }
}
