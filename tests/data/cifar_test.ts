/** CIFAR-10/100 readers on small generated files in the official binary formats. */
import assert from "node:assert/strict";
import {
  checkCifarFiles,
  checkDataset,
  checkDatasetFiles,
  CIFAR100_CLASSES,
  CIFAR10_CLASSES,
  DatasetError,
  loadCifar,
  loadCifar10,
  loadCifar100,
} from "../../src/data/mod.ts";
import { makeCifarFixture, pixelValue, writeFixture } from "./cifar_fixtures.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "atop-cifar-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("class lists", () => {
  assert.equal(CIFAR10_CLASSES.length, 10);
  assert.equal(CIFAR100_CLASSES.length, 100);
  assert.equal(new Set(CIFAR100_CLASSES).size, 100);
  assert.equal(CIFAR100_CLASSES[0], "apple");
  assert.equal(CIFAR100_CLASSES[99], "worm");
});

Deno.test("CIFAR-10: labels and R, G, B planes decode to NCHW, from either folder form", async () => {
  await withTempDir(async (dir) => {
    const fixture = makeCifarFixture("cifar10", 3);
    await writeFixture(dir, fixture);
    for (const split of ["train", "test"] as const) {
      const ds = await loadCifar10(dir, split, { expectedRecords: 3 });
      checkDataset(ds);
      assert.equal(ds.name, `cifar10/${split}`);
      assert.deepEqual(ds.shape, [3, 32, 32]);
      assert.equal(ds.classes, CIFAR10_CLASSES);
      assert.equal(ds.labels.length, split === "train" ? 15 : 3);
      assert.deepEqual(ds.labels, fixture.expected[split].labels);
      assert.deepEqual(ds.images, fixture.expected[split].images);
    }
    // Spot checks of the layout, independent of the fixture's own bookkeeping: image 7 is the
    // 2nd record of data_batch_3.bin; its green plane starts 1 + 1024 bytes into the record.
    const train = await loadCifar10(dir, "train", { expectedRecords: 3 });
    const record = new Uint8Array(await Deno.readFile(`${dir}/data_batch_3.bin`)).subarray(3073, 2 * 3073);
    assert.equal(train.labels[7], record[0]);
    assert.equal(train.images[7 * 3072 + 1 * 1024 + 5 * 32 + 9], record[1 + 1024 + 5 * 32 + 9]);
    assert.equal(train.images[7 * 3072 + 2 * 1024 + 31 * 32 + 31], pixelValue(7, 2, 31, 31));

    // The folder the official tarball extracts to, inside the given folder.
    const nested = `${dir}/outer`;
    await writeFixture(`${nested}/cifar-10-batches-bin`, fixture);
    const viaNested = await loadCifar("cifar10", nested, "test", { expectedRecords: 3 });
    assert.deepEqual(viaNested.images, fixture.expected.test.images);
  });
});

Deno.test("CIFAR-100: fine labels (coarse checked), NCHW, both folder forms", async () => {
  await withTempDir(async (dir) => {
    const fixture = makeCifarFixture("cifar100", 4);
    await writeFixture(`${dir}/cifar-100-binary`, fixture);
    for (const split of ["train", "test"] as const) {
      const ds = await loadCifar100(dir, split, { expectedRecords: 4 });
      checkDataset(ds);
      assert.equal(ds.classes.length, 100);
      assert.deepEqual(ds.labels, fixture.expected[split].labels);
      assert.deepEqual(ds.images, fixture.expected[split].images);
    }
    const direct = await loadCifar100(`${dir}/cifar-100-binary`, "train", { expectedRecords: 4 });
    // Fine labels, not coarse: the fixture's fine labels go past 19.
    assert.deepEqual([...direct.labels], [0, 3, 6, 9]);
    const test = await loadCifar100(dir, "test", { expectedRecords: 4 });
    assert.deepEqual([...test.labels], [5, 8, 11, 14]);
  });
});

Deno.test("CIFAR errors name the file and the fix", async () => {
  await withTempDir(async (dir) => {
    // Missing folder: say how to download.
    await assert.rejects(
      loadCifar10(`${dir}/nowhere`, "train"),
      (e: Error) =>
        e instanceof DatasetError && /folder .*nowhere does not exist/.test(e.message) &&
        e.message.includes(`deno task data cifar10 --dir ${dir}/nowhere\``) &&
        /cifar-10-binary\.tar\.gz/.test(e.message),
    );
    const fixture = makeCifarFixture("cifar10", 2);
    await writeFixture(dir, fixture);
    // The official sizes are required unless the test override is given.
    await assert.rejects(loadCifar10(dir, "test"), /test_batch\.bin holds 2 records .* expected 10000/);
    await assert.rejects(
      loadCifar10(dir, "test", { expectedRecords: 0 }),
      /expectedRecords must be a positive integer/,
    );
    // The override is exact, not a minimum.
    await assert.rejects(loadCifar10(dir, "test", { expectedRecords: 1 }), /holds 2 records .* expected 1 /);

    // The check a run makes before it starts: both splits' files, by size, without reading them.
    await checkCifarFiles("cifar10", dir, { expectedRecords: 2 });
    await checkDatasetFiles("fashion-mnist", `${dir}/nowhere`); // built in: no files
    await assert.rejects(
      checkDatasetFiles("cifar10", dir),
      /data_batch_1\.bin holds 2 records .* expected 10000/,
    );
    await assert.rejects(checkDatasetFiles("cifar10", `${dir}/nowhere`), /folder .*nowhere does not exist/);
    await assert.rejects(checkDatasetFiles("svhn", dir), /unknown dataset 'svhn'/);

    // Missing file.
    await Deno.remove(`${dir}/data_batch_3.bin`);
    await assert.rejects(
      checkCifarFiles("cifar10", dir, { expectedRecords: 2 }),
      /missing file .*data_batch_3\.bin.*`deno task data cifar10 --dir /,
    );
    await assert.rejects(
      loadCifar10(dir, "train", { expectedRecords: 2 }),
      /missing file .*data_batch_3\.bin.*`deno task data cifar10 --dir /,
    );
    // An empty cifar-10-batches-bin/ inside the folder: the hint names the folder itself, where
    // the download command unpacks that subfolder (it named the subfolder, which nests it twice).
    const nested = `${dir}/nested`;
    await Deno.mkdir(`${nested}/cifar-10-batches-bin`, { recursive: true });
    await assert.rejects(
      loadCifar10(nested, "test"),
      (e: Error) => e.message.includes(`--dir ${nested}\``) && !e.message.includes(`--dir ${nested}/`),
    );
    await writeFixture(dir, fixture);

    // Size not a multiple of the record.
    const good = fixture.files.get("data_batch_2.bin")!;
    await Deno.writeFile(`${dir}/data_batch_2.bin`, good.subarray(0, good.length - 10));
    await assert.rejects(
      loadCifar10(dir, "train", { expectedRecords: 2 }),
      /data_batch_2\.bin has 6136 bytes, not a multiple of the 3073-byte record .*corrupt/,
    );
    // Whole records but truncated.
    await Deno.writeFile(`${dir}/data_batch_2.bin`, good.subarray(0, 3073));
    await assert.rejects(
      loadCifar10(dir, "train", { expectedRecords: 2 }),
      /data_batch_2\.bin holds 1 records .*truncated/,
    );
    // Label out of range.
    const bad = good.slice();
    bad[3073] = 10;
    await Deno.writeFile(`${dir}/data_batch_2.bin`, bad);
    await assert.rejects(
      loadCifar10(dir, "train", { expectedRecords: 2 }),
      /data_batch_2\.bin record 1 has label byte 0 = 10, outside 0\.\.9/,
    );
  });
  await withTempDir(async (dir) => {
    const fixture = makeCifarFixture("cifar100", 2);
    await writeFixture(dir, fixture);
    const bad = fixture.files.get("test.bin")!.slice();
    bad[0] = 20; // coarse label
    await Deno.writeFile(`${dir}/test.bin`, bad);
    await assert.rejects(
      loadCifar100(dir, "test", { expectedRecords: 2 }),
      /test\.bin record 0 has label byte 0 = 20, outside 0\.\.19/,
    );
    bad[0] = 0;
    bad[3074 + 1] = 100; // fine label of record 1
    await Deno.writeFile(`${dir}/test.bin`, bad);
    await assert.rejects(
      loadCifar100(dir, "test", { expectedRecords: 2 }),
      /record 1 has label byte 1 = 100, outside 0\.\.99/,
    );
    await Deno.writeFile(`${dir}/train.bin`, new Uint8Array(3073 * 2));
    await assert.rejects(
      loadCifar100(dir, "train", { expectedRecords: 2 }),
      /not a multiple of the 3074-byte record/,
    );
    // deno-lint-ignore no-explicit-any
    await assert.rejects(loadCifar("cifar1000" as any, dir, "train"), /unknown dataset/);
  });
});
