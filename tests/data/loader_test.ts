/**
 * GpuDataset + DataLoader: batches are read back (in the test only) and compared with a
 * TypeScript reference of the gather and of the Philox crop/flip draws.
 */
import assert from "node:assert/strict";
import {
  balancedOrder,
  type Batch,
  DataLoader,
  type Dataset,
  GpuDataset,
  loadFashionMnist,
} from "../../src/data/mod.ts";
import { philox4x32 } from "../../src/ops/random.ts";
import { currentGpu } from "../../src/device/runtime.ts";
import { Rng } from "../helpers/reference.ts";
import { gpuTest } from "../helpers/setup.ts";

/** A dataset of random bytes; C·H·W = 90 is not a multiple of 4, so samples straddle words. */
function randomDataset(
  n: number,
  shape: [number, number, number] = [3, 5, 6],
  classes = 5,
  seed = 1,
): Dataset {
  const rng = new Rng(seed);
  const size = shape[0] * shape[1] * shape[2];
  return {
    name: "random",
    images: Uint8Array.from({ length: n * size }, () => rng.int(0, 255)),
    labels: Uint8Array.from({ length: n }, () => rng.int(0, classes - 1)),
    shape,
    classes: Array.from({ length: classes }, (_, k) => `class ${k}`),
  };
}

interface RefOptions {
  seed: number;
  stream: number;
  padding: number;
  crop: boolean;
  flip: boolean;
}

/**
 * Reference batch: sample `indices[b]` at epoch position `offset + b`, augmented by the draw
 * philox((offset + b, epoch, stream, 0), seed): crop corner (x % (2p+1), y % (2p+1)), flip z & 1.
 * Also returns a mask of the output pixels that come from the zero padding.
 */
function referenceBatch(ds: Dataset, indices: Uint32Array, offset: number, epoch: number, o: RefOptions) {
  const [c, h, w] = ds.shape;
  const images = new Float32Array(indices.length * c * h * w);
  const padded = new Uint8Array(images.length);
  const p = o.crop ? o.padding : 0;
  indices.forEach((sample, b) => {
    const bits = philox4x32([offset + b, epoch, o.stream, 0], [o.seed >>> 0, Math.floor(o.seed / 2 ** 32)]);
    const oy = o.crop ? bits[0] % (2 * p + 1) : p;
    const ox = o.crop ? bits[1] % (2 * p + 1) : p;
    const flip = o.flip && (bits[2] & 1) === 1;
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const xc = flip ? w - 1 - x : x;
          const sy = y + oy - p, sx = xc + ox - p;
          const out = ((b * c + ch) * h + y) * w + x;
          if (sy < 0 || sx < 0 || sy >= h || sx >= w) {
            padded[out] = 1;
            images[out] = 0;
          } else {
            images[out] = ds.images[((sample * c + ch) * h + sy) * w + sx] / 255;
          }
        }
      }
    }
  });
  return { images, padded };
}

async function checkBatch(
  ds: Dataset,
  loader: DataLoader,
  batch: Batch,
  o: RefOptions,
): Promise<{ paddedPixels: number }> {
  const [c, h, w] = ds.shape;
  const size = batch.indices.length;
  assert.deepEqual(batch.images.shape, [size, c, h, w]);
  assert.equal(batch.images.dtype, "f32");
  assert.deepEqual(batch.labels.shape, [size]);
  assert.equal(batch.labels.dtype, "i32");
  const labels = await batch.labels.toArray();
  assert.deepEqual([...labels], [...batch.indices].map((i) => ds.labels[i]));
  const images = await batch.images.toArray();
  const ref = referenceBatch(ds, batch.indices, batch.batch * loader.batchSize, batch.epoch, o);
  let paddedPixels = 0;
  for (let i = 0; i < images.length; i++) {
    if (ref.padded[i]) {
      paddedPixels++;
      assert.equal(images[i], 0, `padding pixel ${i} is ${images[i]}`);
    } else {
      assert.ok(Math.abs(images[i] - ref.images[i]) <= 1e-7, `pixel ${i}: ${images[i]} vs ${ref.images[i]}`);
    }
  }
  batch.images.dispose();
  batch.labels.dispose();
  return { paddedPixels };
}

const PLAIN: RefOptions = { seed: 0, stream: 0, padding: 0, crop: false, flip: false };

gpuTest(
  "loader: shapes, labels and pixels match the host dataset; every sample once per epoch",
  async (gpu) => {
    const ds = randomDataset(37);
    for (const layout of ["row", "element"] as const) {
      // 1000-byte chunks: 11 samples each, 4 chunk buffers (the multi-binding path).
      for (const maxChunkBytes of [undefined, 1000]) {
        const gds = GpuDataset.upload(ds, { maxChunkBytes });
        assert.equal(gds.chunks.length, maxChunkBytes ? 4 : 1);
        const loader = new DataLoader(gds, { batchSize: 8, seed: 3, layout });
        assert.equal(loader.batchesPerEpoch, 5);
        const seen: number[] = [];
        const read = gpu.read;
        for (const batch of loader) {
          seen.push(...batch.indices);
          // The loader itself never reads back: the readbacks below are the test's.
          gpu.read = read;
          await checkBatch(ds, loader, batch, { ...PLAIN, seed: 3 });
          gpu.read = () => Promise.reject(new Error("loader read back from the GPU"));
        }
        gpu.read = read;
        assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: 37 }, (_, i) => i));
        assert.deepEqual(loader.state(), { epoch: 1, batch: 0 });
        loader.dispose();
        gds.dispose();
      }
    }
  },
);

gpuTest("loader: seeded order per epoch, reproducible, resumable at (epoch, batch)", async () => {
  const ds = randomDataset(50);
  const gds = GpuDataset.upload(ds);
  const options = { batchSize: 16, seed: 42, augment: { crop: { padding: 2 }, flip: true } };
  const a = new DataLoader(gds, options);
  const b = new DataLoader(gds, options);
  assert.deepEqual(a.order(0), b.order(0));
  assert.notDeepEqual(a.order(0), a.order(1));
  assert.notDeepEqual(a.order(0), new DataLoader(gds, { ...options, seed: 43 }).order(0));
  assert.deepEqual([...a.order(3)].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));

  // Run epochs 0 and 1 with `next()`, keeping what each batch produced.
  const run: { indices: number[]; images: number[]; labels: number[] }[] = [];
  for (let k = 0; k < 2 * a.batchesPerEpoch; k++) {
    const batch = a.next();
    run.push({
      indices: [...batch.indices],
      images: [...await batch.images.toArray()],
      labels: [...await batch.labels.toArray()],
    });
    batch.images.dispose();
    batch.labels.dispose();
  }
  assert.deepEqual(a.state(), { epoch: 2, batch: 0 });
  assert.deepEqual(run.slice(0, 4).flatMap((r) => r.indices), [...a.order(0)]);
  assert.deepEqual(run.slice(4).flatMap((r) => r.indices), [...a.order(1)]);
  assert.equal(run[3].indices.length, 2); // last batch of 50 = 3 x 16 + 2

  // A fresh loader started at (1, 2) reproduces the rest of epoch 1 bit for bit.
  const resumed = new DataLoader(gds, { ...options, start: { epoch: 1, batch: 2 } });
  assert.deepEqual(resumed.state(), { epoch: 1, batch: 2 });
  const rest = [...resumed];
  assert.equal(rest.length, 2);
  for (const [k, batch] of rest.entries()) {
    assert.equal(batch.epoch, 1);
    assert.equal(batch.batch, 2 + k);
    assert.deepEqual([...batch.indices], run[6 + k].indices);
    assert.deepEqual([...await batch.images.toArray()], run[6 + k].images);
    assert.deepEqual([...await batch.labels.toArray()], run[6 + k].labels);
    batch.images.dispose();
    batch.labels.dispose();
  }
  assert.deepEqual(resumed.state(), { epoch: 2, batch: 0 });
  // The same augmentation at another epoch differs (new order and new draws).
  assert.notDeepEqual(run[0].images, run[4].images);
  // seek to the end of an epoch = start of the next.
  resumed.seek({ epoch: 5, batch: 4 });
  assert.deepEqual(resumed.state(), { epoch: 6, batch: 0 });
  assert.throws(() => resumed.seek({ epoch: 0, batch: 5 }), /batch 5 is past the 4 batches/);
  for (const l of [a, b, resumed]) l.dispose();
  gds.dispose();
});

gpuTest("loader: crop and flip equal the Philox reference; padding is zero", async () => {
  const ds = randomDataset(29, [2, 7, 9]);
  let padded = 0;
  for (const layout of ["row", "element"] as const) {
    for (const augment of [{ flip: true }, { crop: { padding: 3 } }, { crop: { padding: 2 }, flip: true }]) {
      const gds = GpuDataset.upload(ds, { maxChunkBytes: 700 });
      const loader = new DataLoader(gds, { batchSize: 10, seed: 2 ** 33 + 7, stream: 5, augment, layout });
      const o = {
        seed: 2 ** 33 + 7,
        stream: 5,
        padding: augment.crop?.padding ?? 0,
        crop: augment.crop !== undefined,
        flip: augment.flip ?? false,
      };
      for (let epoch = 0; epoch < 2; epoch++) {
        for (const batch of loader) padded += (await checkBatch(ds, loader, batch, o)).paddedPixels;
      }
      loader.dispose();
      gds.dispose();
    }
  }
  assert.ok(padded > 1000, `only ${padded} padding pixels were checked`);
});

gpuTest("loader: limit takes a class-balanced subset; no shuffle keeps its order; dropLast", async () => {
  const ds = randomDataset(60, [1, 4, 4], 4, 9);
  const balanced = balancedOrder(ds.labels);
  // Round r takes the r-th sample of every class, in label order.
  const byClass = [0, 1, 2, 3].map((k) => [...ds.labels.keys()].filter((i) => ds.labels[i] === k));
  assert.deepEqual([...balanced.subarray(0, 4)], byClass.map((c) => c[0]));
  assert.deepEqual([...balanced.subarray(4, 8)], byClass.map((c) => c[1]));
  assert.deepEqual([...balanced].sort((a, b) => a - b), Array.from({ length: 60 }, (_, i) => i));

  const gds = GpuDataset.upload(ds);
  const limited = new DataLoader(gds, { batchSize: 4, limit: 12, shuffle: false });
  assert.equal(limited.samples, 12);
  const batches = [...limited];
  assert.deepEqual(batches.flatMap((b) => [...b.indices]), [...balanced.subarray(0, 12)]);
  for (const b of batches) await checkBatch(ds, limited, b, PLAIN);
  const counts = [0, 0, 0, 0];
  for (const i of balanced.subarray(0, 12)) counts[ds.labels[i]]++;
  assert.deepEqual(counts, [3, 3, 3, 3]);

  const shuffled = new DataLoader(gds, { batchSize: 5, limit: 12, dropLast: true, seed: 1 });
  assert.equal(shuffled.batchesPerEpoch, 2);
  const seen = [...shuffled].flatMap((b) => {
    b.images.dispose();
    b.labels.dispose();
    return [...b.indices];
  });
  assert.equal(seen.length, 10);
  assert.ok(seen.every((i) => balanced.subarray(0, 12).includes(i)));

  const plain = new DataLoader(gds, { batchSize: 7, shuffle: false });
  assert.deepEqual([...plain.order(0)], Array.from({ length: 60 }, (_, i) => i));
  assert.deepEqual([...plain.order(0)], [...plain.order(1)]);

  // limitSubset "fresh": each epoch a new random 12 of the 60, its batches exactly that order,
  // the same after a seek (resume).
  const fresh = new DataLoader(gds, { batchSize: 5, limit: 12, limitSubset: "fresh", seed: 3 });
  assert.deepEqual([fresh.samples, fresh.batchesPerEpoch], [12, 3]);
  const epochs = [0, 1, 2].map((e) => [...fresh.order(e)]);
  for (const e of epochs) assert.equal(new Set(e).size, 12);
  assert.notDeepEqual(new Set(epochs[0]), new Set(epochs[1]), "a fresh subset each epoch");
  assert.ok(new Set(epochs.flat()).size > 12 + 6, "the epochs draw from the whole set");
  const drawn = [...fresh].flatMap((b) => {
    b.images.dispose();
    b.labels.dispose();
    return [...b.indices];
  });
  assert.deepEqual(drawn, epochs[0]);
  fresh.seek({ epoch: 2, batch: 1 });
  const resumed = fresh.next();
  assert.deepEqual([...resumed.indices], epochs[2].slice(5, 10));
  resumed.images.dispose();
  resumed.labels.dispose();
  assert.throws(
    () => new DataLoader(gds, { batchSize: 4, limit: 12, limitSubset: "fresh", shuffle: false }),
    /limitSubset "fresh" draws a random subset and needs shuffle/,
  );
  for (const l of [limited, shuffled, plain, fresh]) l.dispose();
  gds.dispose();
});

gpuTest("loader: argument errors; a loader given a host dataset owns its upload", async () => {
  const ds = randomDataset(10, [1, 2, 2]);
  const gds = GpuDataset.upload(ds);
  assert.throws(() => new DataLoader(gds, { batchSize: 0 }), /batchSize must be an integer >= 1, got 0/);
  assert.throws(() => new DataLoader(gds, { batchSize: 2.5 }), /batchSize must be an integer/);
  assert.throws(
    () => new DataLoader(gds, { batchSize: 2, augment: { crop: { padding: -1 } } }),
    /padding must be/,
  );
  assert.throws(() => new DataLoader(gds, { batchSize: 2, limit: 0 }), /limit must be an integer >= 1/);
  assert.throws(() => new DataLoader(gds, { batchSize: 11, dropLast: true }), /leaves no batch/);
  assert.throws(() => new DataLoader(gds, { batchSize: 2, seed: -1 }), /seed must be an integer >= 0/);
  assert.throws(
    () => GpuDataset.upload({ ...ds, labels: new Uint8Array(0), images: new Uint8Array(0) }),
    /is empty/,
  );
  assert.throws(() => GpuDataset.upload(ds, { maxChunkBytes: 3 }), /exceeds the 3-byte chunk limit/);
  assert.throws(
    () => GpuDataset.upload(randomDataset(40, [1, 2, 2]), { maxChunkBytes: 4 }),
    /needs 40 buffers/,
  );
  gds.dispose();

  // A host dataset is uploaded by the loader, which then owns (and disposes) the upload.
  const own = new DataLoader(ds, { batchSize: 4, shuffle: false });
  await checkBatch(ds, own, own.next(), PLAIN);
  own.dispose();
  assert.ok(own.dataset.labels.isDisposed && own.dataset.chunks.every((t) => t.isDisposed));
  // A loader rejected for its options frees the upload it made.
  const before = currentGpu().memory().bytesInUse;
  assert.throws(() => new DataLoader(ds, { batchSize: 11, dropLast: true }), /leaves no batch/);
  assert.equal(currentGpu().memory().bytesInUse, before);
});

gpuTest("loader: real Fashion-MNIST, augmented batches match the reference; epoch timing", async (gpu) => {
  const ds = await loadFashionMnist("test");
  let t = performance.now();
  const gds = GpuDataset.upload(ds);
  await gpu.sync();
  const uploadMs = performance.now() - t;
  const augment = { crop: { padding: 2 }, flip: true };
  const loader = new DataLoader(gds, { batchSize: 128, seed: 7, augment });
  const o = { seed: 7, stream: 0, padding: 2, crop: true, flip: true };
  await checkBatch(ds, loader, loader.next(), o);
  loader.seek({ epoch: 0, batch: loader.batchesPerEpoch - 1 }); // the last, partial batch
  const last = loader.next();
  assert.equal(last.indices.length, 10000 % 128);
  await checkBatch(ds, loader, last, o);

  // One epoch of 79 batches, images only produced (as a training loop would consume them).
  t = performance.now();
  for (const batch of loader) {
    batch.images.dispose();
    batch.labels.dispose();
  }
  await gpu.sync();
  const epochMs = performance.now() - t;
  console.log(
    `fashion-mnist test split: upload ${uploadMs.toFixed(0)} ms; one augmented epoch ` +
      `(${loader.batchesPerEpoch} batches of 128) ${
        epochMs.toFixed(0)
      } ms on ${gpu.adapterName} (${loader.layout} layout)`,
  );
  loader.dispose();
  gds.dispose();
});
