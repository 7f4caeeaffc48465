/**
 * PNG output for image grids (clean / adversarial / purified samples) and loss curves.
 *
 * A PNG file is an 8-byte signature followed by chunks: [length u32 BE][type, 4 ASCII bytes]
 * [data][CRC-32 of type + data]. We write the minimum: IHDR (size, bit depth 8, colour type),
 * one IDAT (the zlib-compressed scanlines, each prefixed with filter byte 0 = "none"), and IEND.
 * `CompressionStream("deflate")` produces exactly the zlib format (header + deflate + Adler-32)
 * that IDAT requires.
 */
import { writeFileAtomic } from "./atomic.ts";

/** An 8-bit image with interleaved channels, rows top to bottom. */
export interface Image {
  pixels: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 3 | 4;
}

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** PNG colour type per channel count: 0 greyscale, 2 RGB, 6 RGBA. */
const COLOR_TYPE: Record<number, number> = { 1: 0, 3: 2, 4: 6 };

let crcTable: Uint32Array | null = null;

/** CRC-32 (ISO 3309, reflected polynomial 0xEDB88320), as PNG chunks and zip use. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

async function zlibCompress(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function checkImage(op: string, pixels: Uint8Array, width: number, height: number, channels: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`${op}: image size ${width}x${height} must be positive integers`);
  }
  if (!(channels in COLOR_TYPE)) {
    throw new RangeError(`${op}: channels must be 1 (grey), 3 (RGB) or 4 (RGBA), got ${channels}`);
  }
  if (pixels.length !== width * height * channels) {
    throw new RangeError(
      `${op}: ${pixels.length} bytes do not fill a ${width}x${height}x${channels} image ` +
        `(${width * height * channels} needed; pixels are interleaved, rows top to bottom)`,
    );
  }
}

/** Encodes 8-bit interleaved pixels (rows top to bottom) as a PNG file. */
export async function encodePng(
  pixels: Uint8Array,
  width: number,
  height: number,
  channels: 1 | 3 | 4,
): Promise<Uint8Array> {
  checkImage("encodePng", pixels, width, height, channels);
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header[8] = 8; // bits per channel
  header[9] = COLOR_TYPE[channels];
  // header[10..12] = 0: deflate compression, adaptive filtering, no interlace

  // Scanlines, each with filter type 0 (bytes as they are).
  const stride = width * channels;
  const raw = new Uint8Array(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }

  const parts = [
    new Uint8Array(SIGNATURE),
    chunk("IHDR", header),
    chunk("IDAT", await zlibCompress(raw)),
    chunk("IEND", new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Encodes and writes a PNG file (atomically, creating parent directories). */
export async function writePng(path: string, image: Image): Promise<void>;
export async function writePng(
  path: string,
  pixels: Uint8Array,
  width: number,
  height: number,
  channels: 1 | 3 | 4,
): Promise<void>;
export async function writePng(
  path: string,
  imageOrPixels: Image | Uint8Array,
  width?: number,
  height?: number,
  channels?: 1 | 3 | 4,
): Promise<void> {
  const image = imageOrPixels instanceof Uint8Array
    ? { pixels: imageOrPixels, width: width!, height: height!, channels: channels! }
    : imageOrPixels;
  await writeFileAtomic(path, await encodePng(image.pixels, image.width, image.height, image.channels));
}

// ---------------------------------------------------------------------------------------------
// Image grids

export interface GridOptions {
  /** Images per row (default: ceil(sqrt(N))). */
  cols?: number;
  /** Pixels of padding around and between images, not scaled (default 2). */
  pad?: number;
  /** Integer nearest-neighbour upscaling of each image (default 1). */
  scale?: number;
  /** Padding intensity in [0, 1] (default 1, white). */
  padValue?: number;
}

/**
 * Lays out N images of shape [N, C, H, W] (C = 1 or 3, values in [0, 1], clamped) in a grid,
 * row-major: image i goes to row floor(i / cols), column i % cols. To show several sets (clean,
 * adversarial, purified) as rows, concatenate them in row order with N = cols per set.
 */
export function imageGrid(
  images: Float32Array,
  shape: readonly [number, number, number, number] | readonly number[],
  options: GridOptions = {},
): Image {
  if (shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new RangeError(`imageGrid: shape [${shape.join(", ")}] must be [N, C, H, W]`);
  }
  const [n, c, h, w] = shape;
  if (c !== 1 && c !== 3) {
    throw new RangeError(`imageGrid: C must be 1 or 3, got shape [${shape.join(", ")}]`);
  }
  if (n < 1 || h < 1 || w < 1) throw new RangeError(`imageGrid: no images in shape [${shape.join(", ")}]`);
  if (images.length !== n * c * h * w) {
    throw new RangeError(
      `imageGrid: ${images.length} values do not fill shape [${shape.join(", ")}] (${n * c * h * w} needed)`,
    );
  }
  const { cols = Math.ceil(Math.sqrt(n)), pad = 2, scale = 1, padValue = 1 } = options;
  if (!Number.isInteger(cols) || cols < 1) {
    throw new RangeError(`imageGrid: cols must be an integer >= 1, got ${cols}`);
  }
  if (!Number.isInteger(pad) || pad < 0) {
    throw new RangeError(`imageGrid: pad must be an integer >= 0, got ${pad}`);
  }
  if (!Number.isInteger(scale) || scale < 1) {
    throw new RangeError(`imageGrid: scale must be an integer >= 1, got ${scale}`);
  }
  if (!(padValue >= 0 && padValue <= 1)) {
    throw new RangeError(`imageGrid: padValue must be in [0, 1], got ${padValue}`);
  }

  const rows = Math.ceil(n / cols);
  const cellW = w * scale;
  const cellH = h * scale;
  const width = cols * cellW + (cols + 1) * pad;
  const height = rows * cellH + (rows + 1) * pad;
  const pixels = new Uint8Array(width * height * c).fill(toByte(padValue));
  const plane = h * w;
  for (let i = 0; i < n; i++) {
    const left = pad + (i % cols) * (cellW + pad);
    const top = pad + Math.floor(i / cols) * (cellH + pad);
    const base = i * c * plane;
    for (let y = 0; y < cellH; y++) {
      const srcRow = Math.floor(y / scale) * w;
      const dstRow = ((top + y) * width + left) * c;
      for (let x = 0; x < cellW; x++) {
        const src = base + srcRow + Math.floor(x / scale);
        for (let ch = 0; ch < c; ch++) pixels[dstRow + x * c + ch] = toByte(images[src + ch * plane]);
      }
    }
  }
  return { pixels, width, height, channels: c };
}

/** [0, 1] -> 0..255, clamped; NaN becomes 0. */
function toByte(v: number): number {
  return v > 0 ? (v < 1 ? Math.round(v * 255) : 255) : 0;
}

// ---------------------------------------------------------------------------------------------
// Line charts

export interface Series {
  name: string;
  values: readonly number[];
}

export interface ChartOptions {
  width: number;
  height: number;
  title?: string;
  /** Logarithmic y axis (non-positive values are skipped). */
  logY?: boolean;
}

/** Distinct series colours (matplotlib's tab10). */
const PALETTE: [number, number, number][] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [127, 127, 127],
  [188, 189, 34],
  [23, 190, 207],
];

/**
 * 3x5 pixel font: 5 rows of 3 bits per glyph, enough for titles, legends and axis numbers
 * (letters are drawn upper case).
 */
const FONT: Record<string, string> = {
  "0": "111101101101111",
  "1": "010110010010111",
  "2": "111001111100111",
  "3": "111001111001111",
  "4": "101101111001001",
  "5": "111100111001111",
  "6": "111100111101111",
  "7": "111001001001001",
  "8": "111101111101111",
  "9": "111101111001111",
  A: "010101111101101",
  B: "110101110101110",
  C: "011100100100011",
  D: "110101101101110",
  E: "111100110100111",
  F: "111100110100100",
  G: "011100101101011",
  H: "101101111101101",
  I: "111010010010111",
  J: "001001001101010",
  K: "101101110101101",
  L: "100100100100111",
  M: "101111111101101",
  N: "110101101101101",
  O: "010101101101010",
  P: "110101110100100",
  Q: "010101101110011",
  R: "110101110101101",
  S: "011100010001110",
  T: "111010010010010",
  U: "101101101101111",
  V: "101101101101010",
  W: "101101111111101",
  X: "101101010101101",
  Y: "101101010010010",
  Z: "111001010100111",
  ".": "000000000000010",
  ",": "000000000010100",
  "-": "000000111000000",
  "+": "000010111010000",
  ":": "000010000010000",
  "=": "000111000111000",
  "/": "001001010100100",
  "(": "010100100100010",
  ")": "010001001001010",
  "%": "101001010100101",
  "_": "000000000000111",
};

/** A minimal RGB canvas. */
class Canvas {
  readonly pixels: Uint8Array;
  constructor(readonly width: number, readonly height: number) {
    this.pixels = new Uint8Array(width * height * 3).fill(255);
  }

  set(x: number, y: number, [r, g, b]: readonly number[]): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (y * this.width + x) * 3;
    this.pixels[i] = r;
    this.pixels[i + 1] = g;
    this.pixels[i + 2] = b;
  }

  rect(x: number, y: number, w: number, h: number, color: readonly number[]): void {
    for (let j = y; j < y + h; j++) for (let i = x; i < x + w; i++) this.set(i, j, color);
  }

  /** Bresenham's line, `thickness` pixels wide, between integer points. */
  line(x0: number, y0: number, x1: number, y1: number, color: readonly number[], thickness = 1): void {
    // A non-integer end would never be reached: the loop below would not end.
    if (![x0, y0, x1, y1].every(Number.isInteger)) {
      throw new RangeError(`Canvas.line: endpoints must be integers, got (${x0}, ${y0}) -> (${x1}, ${y1})`);
    }
    const dx = Math.abs(x1 - x0);
    const dy = -Math.abs(y1 - y0);
    const sx = x0 < x1 ? 1 : -1;
    const sy = y0 < y1 ? 1 : -1;
    let err = dx + dy;
    for (;;) {
      this.rect(x0, y0, thickness, thickness, color);
      if (x0 === x1 && y0 === y1) return;
      const e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }

  /** Draws text with the 3x5 font at integer `scale`; returns the width drawn. */
  text(x: number, y: number, text: string, color: readonly number[], scale: number): number {
    const upper = text.toUpperCase();
    for (let k = 0; k < upper.length; k++) {
      const glyph = FONT[upper[k]];
      if (!glyph) continue; // space and unknown characters leave a gap
      for (let row = 0; row < 5; row++) {
        for (let col = 0; col < 3; col++) {
          if (glyph[row * 3 + col] === "1") {
            this.rect(x + (k * 4 + col) * scale, y + row * scale, scale, scale, color);
          }
        }
      }
    }
    return textWidth(text, scale);
  }
}

function textWidth(text: string, scale: number): number {
  return text.length > 0 ? (text.length * 4 - 1) * scale : 0;
}

/** Short axis labels: 3 significant digits. */
function label(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e-3 && a < 1e5) return String(Number(v.toPrecision(3)));
  return v.toExponential(2).replace(/\.?0+e/, "e").replace("e+", "e");
}

/**
 * A loss-curve style plot of one or more series against their index (step or epoch): white
 * background, light grid, black axes, one tab10 colour per series, y min/max and x range labels,
 * an optional title and a legend of colour swatches with names.
 */
export function lineChart(series: readonly Series[], options: ChartOptions): Image & { channels: 3 } {
  const { width, height, title, logY = false } = options;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 32 || height < 32) {
    throw new RangeError(`lineChart: size ${width}x${height} must be integers >= 32`);
  }
  const canvas = new Canvas(width, height);
  const s = Math.max(1, Math.floor(Math.min(width, height) / 240)); // font scale
  const thickness = Math.min(width, height) >= 400 ? 2 : 1;
  const black = [0, 0, 0];
  const grey = [220, 220, 220];

  // Value range over all finite (and, for log axes, positive) points.
  const transform = (v: number) => (logY ? (v > 0 ? Math.log10(v) : NaN) : v);
  let lo = Infinity;
  let hi = -Infinity;
  let count = 0;
  for (const { values } of series) {
    count = Math.max(count, values.length);
    for (const v of values) {
      const t = transform(v);
      if (Number.isFinite(t)) {
        lo = Math.min(lo, t);
        hi = Math.max(hi, t);
      }
    }
  }
  if (lo > hi) [lo, hi] = [0, 1];
  if (lo === hi) {
    [lo, hi] = [
      Math.max(lo - (Math.abs(lo) * 0.1 || 1), -Number.MAX_VALUE),
      Math.min(hi + (Math.abs(hi) * 0.1 || 1), Number.MAX_VALUE),
    ];
  }
  const untransform = (t: number) => (logY ? 10 ** t : t);

  // Plot area, leaving room for the title, y labels and x labels.
  const hiLabel = label(untransform(hi));
  const loLabel = label(untransform(lo));
  const left = Math.min(
    Math.floor(width / 3),
    6 * s + Math.max(textWidth(hiLabel, s), textWidth(loLabel, s)),
  );
  const top = title ? 12 * s : 6 * s;
  const right = width - 1 - 6 * s;
  const bottom = height - 1 - 10 * s;
  const plotW = right - left;
  const plotH = bottom - top;

  if (title) canvas.text(Math.max(0, Math.floor((width - textWidth(title, s)) / 2)), 3 * s, title, black, s);

  // Grid: 4 divisions each way, then the axes over it.
  for (let k = 1; k <= 4; k++) {
    const y = Math.round(top + (plotH * k) / 4);
    const x = Math.round(left + (plotW * k) / 4);
    canvas.line(left, y, right, y, grey);
    canvas.line(x, top, x, bottom, grey);
  }
  canvas.line(left, top, right, top, grey);
  canvas.line(left, top, left, bottom, black);
  canvas.line(left, bottom, right, bottom, black);

  // Labels: y max / min beside the axis, x range under it.
  canvas.text(left - 3 * s - textWidth(hiLabel, s), top, hiLabel, black, s);
  canvas.text(left - 3 * s - textWidth(loLabel, s), bottom - 5 * s, loLabel, black, s);
  canvas.text(left, bottom + 3 * s, "0", black, s);
  const lastLabel = String(Math.max(0, count - 1));
  canvas.text(right - textWidth(lastLabel, s), bottom + 3 * s, lastLabel, black, s);

  // Series: straight segments between consecutive finite points.
  const px = (i: number) => Math.round(left + (count > 1 ? (plotW * i) / (count - 1) : plotW / 2));
  // Halves first: hi − lo overflows to Infinity for values near ±f64 max (then every y was NaN).
  const py = (t: number) => Math.round(bottom - plotH * ((t / 2 - lo / 2) / (hi / 2 - lo / 2)));
  series.forEach(({ values }, k) => {
    const color = PALETTE[k % PALETTE.length];
    let previous: [number, number] | null = null;
    for (let i = 0; i < values.length; i++) {
      const t = transform(values[i]);
      if (!Number.isFinite(t)) {
        previous = null; // a gap in the curve
        continue;
      }
      const point: [number, number] = [px(i), py(t)];
      if (previous) canvas.line(previous[0], previous[1], point[0], point[1], color, thickness);
      else canvas.rect(point[0], point[1], thickness, thickness, color);
      previous = point;
    }
  });

  // Legend: a swatch and the name per series, top right inside the plot.
  const legendW = Math.max(0, ...series.map((x) => textWidth(x.name, s))) + 8 * s;
  if (series.length > 0) {
    canvas.rect(right - legendW - 3 * s, top + 2 * s, legendW + 2 * s, series.length * 7 * s + s, [
      255,
      255,
      255,
    ]);
  }
  series.forEach(({ name }, k) => {
    const x = right - legendW - 2 * s;
    const y = top + 3 * s + k * 7 * s;
    canvas.rect(x, y, 5 * s, 5 * s, PALETTE[k % PALETTE.length]);
    canvas.text(x + 8 * s, y, name, black, s);
  });

  return { pixels: canvas.pixels, width, height, channels: 3 };
}
