import assert from "node:assert/strict";
import { crc32, encodePng, imageGrid, lineChart, writePng } from "../../src/io/png.ts";

/** Bitwise CRC-32 (no table), independent of the implementation under test. */
function crc32Bitwise(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return (c ^ 0xffffffff) >>> 0;
}

async function inflate(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** A minimal PNG decoder for our own output: checks signature, chunk CRCs, IHDR, and un-filters. */
async function decodePng(png: Uint8Array) {
  assert.deepEqual(Array.from(png.subarray(0, 8)), [137, 80, 78, 71, 13, 10, 26, 10]);
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const chunks: { type: string; data: Uint8Array }[] = [];
  for (let at = 8; at < png.length;) {
    const length = view.getUint32(at);
    const type = new TextDecoder().decode(png.subarray(at + 4, at + 8));
    const data = png.subarray(at + 8, at + 8 + length);
    assert.equal(
      view.getUint32(at + 8 + length),
      crc32Bitwise(png.subarray(at + 4, at + 8 + length)),
      `${type} CRC`,
    );
    chunks.push({ type, data });
    at += 12 + length;
  }
  assert.deepEqual(chunks.map((c) => c.type), ["IHDR", "IDAT", "IEND"]);
  const ihdr = new DataView(chunks[0].data.buffer, chunks[0].data.byteOffset, 13);
  const width = ihdr.getUint32(0);
  const height = ihdr.getUint32(4);
  assert.equal(ihdr.getUint8(8), 8, "bit depth");
  const channels = ({ 0: 1, 2: 3, 6: 4 } as Record<number, number>)[ihdr.getUint8(9)];
  assert.deepEqual([ihdr.getUint8(10), ihdr.getUint8(11), ihdr.getUint8(12)], [0, 0, 0]);
  const idat = chunks[1].data;
  // zlib stream: CMF = 0x78 (deflate, 32K window), (CMF * 256 + FLG) % 31 == 0.
  assert.equal(idat[0], 0x78);
  assert.equal((idat[0] * 256 + idat[1]) % 31, 0);
  const raw = await inflate(new Uint8Array(idat));
  const stride = width * channels;
  assert.equal(raw.length, height * (stride + 1));
  const pixels = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++) {
    assert.equal(raw[y * (stride + 1)], 0, "filter type 0");
    pixels.set(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)), y * stride);
  }
  return { width, height, channels, pixels };
}

function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

Deno.test("png: crc32 matches the reference values", () => {
  assert.equal(crc32(new TextEncoder().encode("IEND")), 0xae426082);
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  const bytes = randomBytes(1000, 7);
  assert.equal(crc32(bytes), crc32Bitwise(bytes));
});

Deno.test("png: encodePng decodes back to the same pixels for 1, 3 and 4 channels", async () => {
  for (const [width, height, channels] of [[1, 1, 1], [7, 5, 3], [4, 9, 4], [33, 2, 1]] as const) {
    const pixels = randomBytes(width * height * channels, width * 100 + height);
    const png = await encodePng(pixels, width, height, channels);
    const decoded = await decodePng(png);
    assert.deepEqual([decoded.width, decoded.height, decoded.channels], [width, height, channels]);
    assert.deepEqual(decoded.pixels, pixels);
  }
  // Compression actually compresses a flat image.
  const flat = await encodePng(new Uint8Array(64 * 64 * 3).fill(200), 64, 64, 3);
  assert.ok(flat.length < 500, `flat 64x64 PNG is ${flat.length} bytes`);
});

Deno.test("png: encodePng rejects bad sizes", async () => {
  await assert.rejects(
    encodePng(new Uint8Array(10), 2, 2, 3),
    /10 bytes do not fill a 2x2x3 image \(12 needed/,
  );
  await assert.rejects(encodePng(new Uint8Array(0), 0, 1, 1), /image size 0x1 must be positive integers/);
  await assert.rejects(
    encodePng(new Uint8Array(4), 2, 1, 2 as 1),
    /channels must be 1 \(grey\), 3 \(RGB\) or 4/,
  );
});

Deno.test("png: writePng writes a decodable file (both call forms)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "png_" });
  try {
    const pixels = randomBytes(6 * 4 * 3, 3);
    await writePng(`${dir}/a.png`, pixels, 6, 4, 3);
    await writePng(`${dir}/sub/b.png`, { pixels, width: 6, height: 4, channels: 3 });
    for (const p of [`${dir}/a.png`, `${dir}/sub/b.png`]) {
      assert.deepEqual((await decodePng(await Deno.readFile(p))).pixels, pixels);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("png: imageGrid places each image, scales, pads and clamps", async () => {
  // 5 RGB images of 2x3, 3 per row: rows of 3 and 2, the last cell is padding.
  const [n, c, h, w] = [5, 3, 2, 3];
  const images = new Float32Array(n * c * h * w);
  const value = (i: number, ch: number, y: number, x: number) => ((i * 7 + ch * 3 + y * 2 + x) % 11) / 10;
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) images[((i * c + ch) * h + y) * w + x] = value(i, ch, y, x);
      }
    }
  }
  const pad = 1;
  const scale = 2;
  const grid = imageGrid(images, [n, c, h, w], { cols: 3, pad, scale, padValue: 0.5 });
  assert.equal(grid.channels, 3);
  assert.equal(grid.width, 3 * w * scale + 4 * pad); // 22
  assert.equal(grid.height, 2 * h * scale + 3 * pad); // 11
  assert.equal(grid.pixels.length, grid.width * grid.height * 3);
  const at = (x: number, y: number, ch: number) => grid.pixels[(y * grid.width + x) * 3 + ch];

  let imagePixels = 0;
  for (let i = 0; i < n; i++) {
    const left = pad + (i % 3) * (w * scale + pad);
    const top = pad + Math.floor(i / 3) * (h * scale + pad);
    for (let y = 0; y < h * scale; y++) {
      for (let x = 0; x < w * scale; x++) {
        for (let ch = 0; ch < c; ch++) {
          const v = Math.fround(value(i, ch, Math.floor(y / scale), Math.floor(x / scale))); // stored as f32
          const expected = Math.round(v * 255);
          assert.equal(at(left + x, top + y, ch), expected, `image ${i} (${x}, ${y}) channel ${ch}`);
        }
        imagePixels++;
      }
    }
  }
  // Everything else is padding (0.5 -> 128), including the empty sixth cell.
  let padPixels = 0;
  for (let k = 0; k < grid.width * grid.height; k++) {
    if (grid.pixels[k * 3] === 128 && grid.pixels[k * 3 + 1] === 128 && grid.pixels[k * 3 + 2] === 128) {
      padPixels++;
    }
  }
  assert.ok(padPixels >= grid.width * grid.height - imagePixels);
  for (let y = 0; y < h * scale; y++) {
    assert.equal(at(pad + 2 * (w * scale + pad), pad + h * scale + pad + y, 0), 128);
  }

  // Greyscale, defaults (pad 2, white), clamping of out-of-range and NaN values.
  const grey = imageGrid(new Float32Array([-0.5, 1.5, NaN, 0.2]), [4, 1, 1, 1], { cols: 4 });
  assert.deepEqual([grey.width, grey.height, grey.channels], [4 + 5 * 2, 1 + 2 * 2, 1]);
  assert.equal(grey.pixels[0], 255);
  const row = Array.from(grey.pixels.subarray(2 * grey.width, 3 * grey.width));
  assert.deepEqual(row, [255, 255, 0, 255, 255, 255, 255, 255, 0, 255, 255, 51, 255, 255]);
  // Default columns: ceil(sqrt(N)).
  assert.equal(imageGrid(new Float32Array(10), [10, 1, 1, 1], { pad: 0 }).width, 4);

  const png = await encodePng(grid.pixels, grid.width, grid.height, grid.channels);
  assert.deepEqual((await decodePng(png)).pixels, grid.pixels);

  assert.throws(() => imageGrid(new Float32Array(8), [2, 2, 2, 1]), /C must be 1 or 3/);
  assert.throws(
    () => imageGrid(new Float32Array(7), [2, 1, 2, 2]),
    /7 values do not fill shape \[2, 1, 2, 2\]/,
  );
  assert.throws(
    () => imageGrid(new Float32Array(4), [1, 1, 2, 2], { scale: 1.5 }),
    /scale must be an integer/,
  );
  assert.throws(
    () => imageGrid(new Float32Array(4), [1, 1, 2, 2], { cols: 0 }),
    /cols must be an integer >= 1/,
  );
});

Deno.test("png: lineChart has the stated size, axes, grid and one colour per series", async () => {
  const steps = 50;
  const series = [
    { name: "train loss", values: Array.from({ length: steps }, (_, i) => 2 * Math.exp(-i / 10) + 0.1) },
    {
      name: "val loss",
      values: Array.from({ length: steps }, (_, i) => (i === 20 ? NaN : 2 * Math.exp(-i / 15) + 0.2)),
    },
    { name: "acc", values: [0.1, 0.5, 0.9] },
  ];
  const chart = lineChart(series, { width: 320, height: 200, title: "Loss (epoch 1-50)" });
  assert.deepEqual([chart.width, chart.height, chart.channels, chart.pixels.length], [
    320,
    200,
    3,
    320 * 200 * 3,
  ]);
  const colours = new Set<string>();
  for (let k = 0; k < chart.width * chart.height; k++) {
    colours.add(chart.pixels.subarray(k * 3, k * 3 + 3).join(","));
  }
  for (const c of ["255,255,255", "0,0,0", "220,220,220", "31,119,180", "255,127,14", "44,160,44"]) {
    assert.ok(colours.has(c), `colour ${c} drawn`);
  }
  // A black x axis spans most of a row near the bottom.
  let axisRow = false;
  for (let y = chart.height - 30; y < chart.height; y++) {
    let black = 0;
    for (let x = 0; x < chart.width; x++) if (chart.pixels[(y * chart.width + x) * 3 + 1] === 0) black++;
    if (black > chart.width * 0.7) axisRow = true;
  }
  assert.ok(axisRow, "x axis drawn");
  assert.deepEqual((await decodePng(await encodePng(chart.pixels, 320, 200, 3))).pixels, chart.pixels);

  // Log axis, constant / empty / single-point series, a large chart: all still the stated size.
  for (
    const [s, w, h, logY] of [
      [[{ name: "c", values: [1, 1, 1] }], 64, 48, false],
      [[{ name: "none", values: [] }], 100, 40, false],
      [[{ name: "one", values: [3] }, { name: "neg", values: [-1, 0, 1e-4, 10] }], 500, 400, true],
      [[], 32, 32, false],
      // Ranges past f64 max (hi − lo overflowed and the line drawing never ended).
      [[{ name: "huge", values: [1e308, -1e308] }], 64, 64, false],
      [[{ name: "flat", values: [1.7e308, 1.7e308] }], 64, 64, false],
    ] as const
  ) {
    const img = lineChart(s, { width: w, height: h, logY });
    assert.deepEqual([img.width, img.height, img.pixels.length], [w, h, w * h * 3]);
  }
  assert.throws(() => lineChart([], { width: 10, height: 100 }), /size 10x100 must be integers >= 32/);
});
