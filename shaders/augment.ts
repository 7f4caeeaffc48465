/**
 * The data loader's one kernel: gather a batch from the uint8 dataset on the GPU, convert it to
 * f32 in [0, 1], and apply train-time augmentation per sample.
 *
 * Dataset layout: the N·C·H·W image bytes are packed 4 per u32 word (byte i is bits 8(i%4)..
 * of word i/4, little-endian), split into `chunks` buffers of whole samples each (a buffer
 * binding may not exceed maxStorageBufferBindingSize: 128 MiB on lavapipe, less than CIFAR's
 * 154 MB), chunk k holding samples [k·S, (k+1)·S).
 *
 * Batch element b is sample `order[offset + b]` of the epoch's order. Its augmentation comes from
 * one Philox draw, bits = philox(counter = (offset + b, epoch, stream, 0), key = seed):
 *   crop with zero padding p: window corner (oy, ox) = (bits.x % (2p+1), bits.y % (2p+1)) in the
 *     image padded by p zeros on every side, i.e. output (y, x) <- source (y + oy - p, x + ox - p),
 *     0 outside the image;
 *   horizontal flip (after the crop) when bits.z & 1 == 1: output (y, x) <- cropped (y, W-1-x).
 * Without augmentation the image is copied as is. The TypeScript reference in the tests
 * reproduces these draws bit for bit.
 */
import { flatIndex, WORKGROUP_1D } from "./common.ts";
import { philox } from "./random.ts";

export interface AugmentKernelOptions {
  /** Number of dataset chunk buffers (1 unless the dataset exceeds one binding). */
  chunks: number;
  crop: boolean;
  flip: boolean;
  /**
   * "row": one invocation per image row (b, c, y), looping over x: one Philox draw per row and
   * scalar loads, the fast shape on CPU adapters. "element": one invocation per output element,
   * so that neighbouring threads write neighbouring addresses (coalesced) on real GPUs.
   */
  layout: "row" | "element";
}

export function augmentShader(o: AugmentKernelOptions): string {
  const stores = Array.from(
    { length: o.chunks },
    (_, k) => `@group(0) @binding(${4 + k}) var<storage, read> store${k}: array<u32>;`,
  ).join("\n");
  // WGSL cannot index an array of bindings: pick the chunk with a branch chain.
  const loadWord = Array.from(
    { length: o.chunks },
    (_, k) =>
      k === o.chunks - 1 ? `return store${k}[word];` : `if (chunk == ${k}u) { return store${k}[word]; }`,
  ).join("\n  ");
  const augmented = o.crop || o.flip;
  return /* wgsl */ `
${flatIndex}
${augmented ? philox : ""}
struct Params {
  batch: u32,            // samples in this batch
  offset: u32,           // position of the batch's first sample in the epoch order
  channels: u32,
  height: u32,
  width: u32,
  samples_per_chunk: u32,
  padding: u32,
  epoch: u32,
  stream: u32,
  seed_lo: u32,
  seed_hi: u32,
  total: u32,            // invocations: rows (B·C·H) or elements (B·C·H·W)
}
@group(0) @binding(0) var<storage, read_write> images: array<f32>;
@group(0) @binding(1) var<storage, read_write> out_labels: array<i32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;
${stores}
@group(0) @binding(${4 + o.chunks}) var<uniform> p: Params;

fn load_word(chunk: u32, word: u32) -> u32 {
  ${loadWord}
}

// Pixel (c, y, x) of a sample as a float in [0, 1]; 0 outside the image (the crop's padding).
fn pixel(sample: u32, c: u32, y: i32, x: i32) -> f32 {
  if (y < 0 || x < 0 || y >= i32(p.height) || x >= i32(p.width)) { return 0.0; }
  let chunk = sample / p.samples_per_chunk;
  let plane = p.height * p.width;
  let byte = (sample - chunk * p.samples_per_chunk) * p.channels * plane + c * plane
    + u32(y) * p.width + u32(x);
  let value = (load_word(chunk, byte >> 2u) >> ((byte & 3u) * 8u)) & 0xffu;
  return f32(value) / 255.0;
}

struct Draw { oy: i32, ox: i32, flip: bool }

// The sample's augmentation: crop corner in the padded image and flip, from one Philox draw.
fn draw(position: u32) -> Draw {
  var d = Draw(i32(p.padding), i32(p.padding), false);
${
    augmented
      ? `  let bits = philox4x32(vec4<u32>(position, p.epoch, p.stream, 0u), vec2<u32>(p.seed_lo, p.seed_hi));`
      : ""
  }
${
    o.crop
      ? `  d.oy = i32(bits.x % (2u * p.padding + 1u));\n  d.ox = i32(bits.y % (2u * p.padding + 1u));`
      : ""
  }
${o.flip ? `  d.flip = (bits.z & 1u) == 1u;` : ""}
  return d;
}

@compute @workgroup_size(${WORKGROUP_1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
${
    o.layout === "row"
      ? `  let row = i;                       // (b, c, y) of the output
  let x_first = 0u;
  let x_end = p.width;`
      : `  let row = i / p.width;             // (b, c, y) of the output, and one x
  let x_first = i % p.width;
  let x_end = x_first + 1u;`
  }
  let y = row % p.height;
  let c = (row / p.height) % p.channels;
  let b = row / (p.height * p.channels);
  let position = p.offset + b;
  let sample = order[position];
  if (c == 0u && y == 0u && x_first == 0u) { out_labels[b] = labels[sample]; }
  let d = draw(position);
  let pad = i32(p.padding);
  let sy = i32(y) + d.oy - pad;
  for (var x = x_first; x < x_end; x++) {
    let xc = select(x, p.width - 1u - x, d.flip);   // flip: read the mirrored column of the crop
    images[row * p.width + x] = pixel(sample, c, sy, i32(xc) + d.ox - pad);
  }
}`;
}
