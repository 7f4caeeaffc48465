/**
 * CIFAR download: tiny tarballs in the official layout, "downloaded" through file:// URLs
 * (Deno's fetch reads them), checked by MD5, gunzipped and extracted by our ustar reader.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  CIFAR_FORMATS,
  downloadCifar,
  type DownloadProgress,
  extractTar,
  loadCifar,
} from "../../src/data/mod.ts";
import { makeCifarFixture } from "./cifar_fixtures.ts";

// ---- a small ustar writer (the format our reader must accept) ----

function tarHeader(name: string, size: number, type: "0" | "5" | "L" | "x" | "g", prefix = ""): Uint8Array {
  const h = new Uint8Array(512);
  const put = (text: string, at: number, length: number) =>
    new TextEncoder().encodeInto(text.slice(0, length), h.subarray(at, at + length));
  put(name, 0, 100);
  put("0000644\0", 100, 8);
  put("0000000\0", 108, 8);
  put("0000000\0", 116, 8);
  put(size.toString(8).padStart(11, "0") + "\0", 124, 12);
  put("14000000000\0", 136, 12);
  put("        ", 148, 8);
  put(type, 156, 1);
  put("ustar\0", 257, 6);
  put("00", 263, 2);
  put(prefix, 345, 155);
  const sum = h.reduce((a, b) => a + b, 0);
  put(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
  return h;
}

/** A pax record, "<length> <key>=<value>\n", its length counting itself (in bytes). */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bytes = new TextEncoder().encode(body).length;
  let length = bytes + 1;
  while (String(length).length + bytes !== length) length++;
  return `${length}${body}`;
}

function tar(
  entries: {
    name: string;
    data?: Uint8Array;
    prefix?: string;
    longName?: boolean;
    /** Name given in a pax extended header ("x"), as Python's PAX_FORMAT and `tar --format=posix`. */
    pax?: boolean;
    /** A global pax header ("g") before the entry. */
    globalPax?: boolean;
  }[],
): Uint8Array {
  const blocks: Uint8Array[] = [];
  const pad = (n: number) => new Uint8Array((512 - (n % 512)) % 512);
  const extended = (type: "x" | "g", records: string) => {
    const body = new TextEncoder().encode(records);
    blocks.push(
      tarHeader(type === "x" ? "PaxHeaders/x" : "GlobalHead", body.length, type),
      body,
      pad(body.length),
    );
  };
  for (const e of entries) {
    if (e.globalPax) extended("g", paxRecord("comment", "made by the test"));
    if (e.pax) extended("x", paxRecord("mtime", "1.5") + paxRecord("path", e.name));
    if (e.longName) {
      const name = new TextEncoder().encode(e.name + "\0");
      blocks.push(tarHeader("././@LongLink", name.length, "L"), name, pad(name.length));
    }
    const shortName = e.longName ? e.name.slice(0, 99) : e.pax ? "stand-in-name" : e.name;
    if (!e.data) {
      blocks.push(tarHeader(shortName, 0, "5", e.prefix));
      continue;
    }
    blocks.push(tarHeader(shortName, e.data.length, "0", e.prefix), e.data, pad(e.data.length));
  }
  blocks.push(new Uint8Array(1024)); // end of archive
  const out = new Uint8Array(blocks.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of blocks) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");

/** An official-layout tarball (folder entry + data files + the text files the real one has). */
async function cifarTarball(which: "cifar10" | "cifar100", records: number, skip?: string) {
  const fixture = makeCifarFixture(which, records);
  const folder = CIFAR_FORMATS[which].folder;
  const entries: { name: string; data?: Uint8Array }[] = [{ name: `${folder}/` }];
  entries.push({ name: `${folder}/readme.txt`, data: new TextEncoder().encode("tiny test copy\n") });
  for (const [name, data] of fixture.files) {
    if (name !== skip) entries.push({ name: `${folder}/${name}`, data });
  }
  const archive = await gzip(tar(entries));
  return { fixture, archive, md5: md5(archive) };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "atop-download-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const fileUrl = (path: string) => new URL(`file://${path}`).href;

Deno.test("official URLs and checksums", () => {
  assert.equal(CIFAR_FORMATS.cifar10.url, "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz");
  assert.equal(CIFAR_FORMATS.cifar10.md5, "c32a1d4ab5d03f1284b67883e8d87530");
  assert.equal(CIFAR_FORMATS.cifar100.url, "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz");
  assert.equal(CIFAR_FORMATS.cifar100.md5, "03b5dce01913d631647c71ecec9e9cb8");
});

Deno.test("downloadCifar: fetch (file://), md5, gunzip, untar, size check, then loadable", async () => {
  await withTempDir(async (dir) => {
    for (const which of ["cifar10", "cifar100"] as const) {
      const { fixture, archive, md5: sum } = await cifarTarball(which, 3);
      const src = `${dir}/server/${which}-binary.tar.gz`;
      await Deno.mkdir(`${dir}/server`, { recursive: true });
      await Deno.writeFile(src, archive);
      const progress: DownloadProgress[] = [];
      const dest = `${dir}/data-${which}`;
      const folder = await downloadCifar(which, dest, {
        url: fileUrl(src),
        md5: sum,
        expectedRecords: 3,
        onProgress: (p) => progress.push(p),
      });
      assert.equal(folder, `${dest}/${CIFAR_FORMATS[which].folder}`);
      assert.equal(progress.at(-1)!.bytes, archive.length);
      assert.ok(progress.at(-1)!.done && progress.slice(0, -1).every((p) => !p.done));
      if (progress.at(-1)!.total !== null) assert.equal(progress.at(-1)!.percent, 100);
      assert.ok(progress.every((p, i) => i === 0 || p.bytes >= progress[i - 1].bytes));
      assert.equal(await Deno.readTextFile(`${folder}/readme.txt`), "tiny test copy\n");
      const leftovers = [...Deno.readDirSync(dest)].map((e) => e.name);
      assert.deepEqual(leftovers, [CIFAR_FORMATS[which].folder]); // archive removed, no .part files
      for (const split of ["train", "test"] as const) {
        const ds = await loadCifar(which, dest, split, { expectedRecords: 3 });
        assert.deepEqual(ds.images, fixture.expected[split].images);
        assert.deepEqual(ds.labels, fixture.expected[split].labels);
      }
      // Complete folder: nothing is fetched again.
      const again = await downloadCifar(which, dest, {
        url: fileUrl(src),
        md5: sum,
        expectedRecords: 3,
        fetchImpl: () => Promise.reject(new Error("should not fetch")),
      });
      assert.equal(again, folder);
    }
  });
});

Deno.test("downloadCifar: checksum mismatch keeps the file aside and says so", async () => {
  await withTempDir(async (dir) => {
    const { archive } = await cifarTarball("cifar10", 2);
    const src = `${dir}/cifar-10-binary.tar.gz.src`;
    await Deno.writeFile(src, archive);
    const dest = `${dir}/data`;
    await assert.rejects(
      downloadCifar("cifar10", dest, { url: fileUrl(src), quiet: true, expectedRecords: 2 }), // official md5
      /checksum mismatch .* expected c32a1d4ab5d03f1284b67883e8d87530.*kept aside as .*\.bad-md5/,
    );
    assert.deepEqual(await Deno.readFile(`${dest}/cifar-10-binary.tar.gz.src.bad-md5`), archive);
    assert.equal([...Deno.readDirSync(dest)].length, 1); // nothing extracted
  });
});

Deno.test("downloadCifar: missing member, HTTP error, corrupt gzip", async () => {
  await withTempDir(async (dir) => {
    const { archive, md5: sum } = await cifarTarball("cifar10", 2, "test_batch.bin");
    const src = `${dir}/a.tar.gz`;
    await Deno.writeFile(src, archive);
    await assert.rejects(
      downloadCifar("cifar10", `${dir}/d1`, { url: fileUrl(src), md5: sum, quiet: true, expectedRecords: 2 }),
      /did not contain the expected files: .*test_batch\.bin is missing/,
    );
    // Wrong record count inside the archive (the official count is expected without override).
    const ok = await cifarTarball("cifar10", 2);
    await Deno.writeFile(src, ok.archive);
    await assert.rejects(
      downloadCifar("cifar10", `${dir}/d2`, { url: fileUrl(src), md5: ok.md5, quiet: true }),
      /data_batch_1\.bin has 6146 bytes, expected 30730000/,
    );
    await assert.rejects(
      downloadCifar("cifar10", `${dir}/d3`, {
        url: "https://example.invalid/cifar-10-binary.tar.gz",
        quiet: true,
        fetchImpl: () => Promise.resolve(new Response("nope", { status: 404, statusText: "Not Found" })),
      }),
      /download of https:\/\/example\.invalid\/cifar-10-binary\.tar\.gz failed: HTTP 404/,
    );
    const garbage = new TextEncoder().encode("this is not gzip data at all");
    await Deno.writeFile(src, garbage);
    await assert.rejects(
      downloadCifar("cifar10", `${dir}/d4`, { url: fileUrl(src), md5: md5(garbage), quiet: true }),
      /extracting .*a\.tar\.gz failed/,
    );
  });
});

Deno.test("extractTar: ustar prefix, GNU long names, unsafe paths, GNU tar's own output", async () => {
  await withTempDir(async (dir) => {
    const data = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
    const longName = "deep/" + "x".repeat(120) + ".bin";
    const stream = (bytes: Uint8Array) => new Blob([bytes as Uint8Array<ArrayBuffer>]).stream();
    const entries = await extractTar(
      stream(tar([
        { name: "b.bin", prefix: "a/very/long/prefix", data },
        { name: longName, data: data.subarray(0, 5), longName: true },
        { name: "empty.bin", data: new Uint8Array(0) },
      ])),
      dir,
    );
    assert.deepEqual(entries.map((e) => [e.name, e.size]), [
      ["a/very/long/prefix/b.bin", 1000],
      [longName, 5],
      ["empty.bin", 0],
    ]);
    assert.deepEqual(await Deno.readFile(`${dir}/a/very/long/prefix/b.bin`), data);
    assert.deepEqual(await Deno.readFile(`${dir}/${longName}`), data.subarray(0, 5));
    // The same archive delivered in odd-sized chunks (headers and bodies split across chunks).
    const whole = tar([{ name: "odd/b.bin", data }, { name: "odd/c.bin", data: data.subarray(3, 600) }]);
    let at = 0, k = 0;
    const sizes = [1, 7, 511, 513, 100, 1024, 3];
    const chunked = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (at >= whole.length) return controller.close();
        const n = sizes[k++ % sizes.length];
        controller.enqueue(whole.slice(at, at + n));
        at += n;
      },
    });
    assert.equal((await extractTar(chunked, dir)).length, 2);
    assert.deepEqual(await Deno.readFile(`${dir}/odd/b.bin`), data);
    assert.deepEqual(await Deno.readFile(`${dir}/odd/c.bin`), data.subarray(3, 600));

    // Names from pax extended headers: long, non-ASCII, after a global header; the stand-in
    // ustar name is not used, and a global header names no file.
    const paxName = "pax/" + "é".repeat(80) + "/données.bin";
    const paxEntries = await extractTar(
      stream(tar([{ name: paxName, data, pax: true, globalPax: true }, { name: "plain.bin", data }])),
      dir,
    );
    assert.deepEqual(paxEntries.map((e) => [e.name, e.size]), [[paxName, 1000], ["plain.bin", 1000]]);
    assert.deepEqual(await Deno.readFile(`${dir}/${paxName}`), data);
    await assert.rejects(Deno.stat(`${dir}/stand-in-name`), Deno.errors.NotFound);
    // A failure in the middle of a file leaves no partial file behind.
    await assert.rejects(
      extractTar(stream(tar([{ name: "cut/c.bin", data }]).subarray(0, 700)), dir),
      /unexpected end/,
    );
    assert.deepEqual([...Deno.readDirSync(`${dir}/cut`)], []);

    await assert.rejects(extractTar(stream(tar([{ name: "../evil.bin", data }])), dir), /unsafe path/);
    // A file named "./" would be written next to dir, not in it.
    await assert.rejects(
      extractTar(stream(tar([{ name: "./", data }])), dir),
      /unsafe path in archive: \.\//,
    );
    // A global pax header is skipped whatever its name (GNU tar's: $TMPDIR/GlobalHead.<pid>.<n>).
    const comment = new TextEncoder().encode(paxRecord("comment", "made by GNU tar"));
    const rest = tar([{ name: "after-global.bin", data }]);
    const withGlobal = new Uint8Array(512 + 512 + rest.length);
    withGlobal.set(tarHeader("/tmp/GlobalHead.1.1", comment.length, "g"));
    withGlobal.set(comment, 512);
    withGlobal.set(rest, 1024);
    assert.deepEqual((await extractTar(stream(withGlobal), dir)).map((e) => e.name), ["after-global.bin"]);
    const corrupt = tar([{ name: "c.bin", data }]);
    corrupt[0] ^= 1;
    await assert.rejects(extractTar(stream(corrupt), dir), /corrupt tar header/);
    await assert.rejects(
      extractTar(stream(tar([{ name: "c.bin", data }]).subarray(0, 700)), dir),
      /unexpected end/,
    );

    // An archive made by GNU tar (if installed), as the official tarballs were.
    const hasTar = await new Deno.Command("tar", { args: ["--version"], stdout: "null" }).output().then((o) =>
      o.success
    )
      .catch(() => false);
    if (!hasTar) return;
    const src = `${dir}/src`;
    const fixture = makeCifarFixture("cifar100", 2);
    await Deno.mkdir(`${src}/cifar-100-binary`, { recursive: true });
    for (const [name, bytes] of fixture.files) await Deno.writeFile(`${src}/cifar-100-binary/${name}`, bytes);
    const out = await new Deno.Command("tar", {
      args: ["-czf", `${dir}/gnu.tar.gz`, "-C", src, "cifar-100-binary"],
    })
      .output();
    assert.ok(out.success);
    const archive = await Deno.readFile(`${dir}/gnu.tar.gz`);
    const folder = await downloadCifar("cifar100", `${dir}/gnu`, {
      url: fileUrl(`${dir}/gnu.tar.gz`),
      md5: md5(archive),
      quiet: true,
      expectedRecords: 2,
      keepArchive: true,
    });
    const ds = await loadCifar("cifar100", folder, "train", { expectedRecords: 2 });
    assert.deepEqual(ds.images, fixture.expected.train.images);
    assert.ok(Deno.statSync(`${dir}/gnu/gnu.tar.gz`).isFile); // keepArchive
  });
});
