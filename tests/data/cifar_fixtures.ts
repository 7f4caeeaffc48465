/**
 * Small CIFAR files in the official binary formats, for the reader and download tests: the
 * official record layout with fewer records per file (loaders get `expectedRecords`).
 */
import { CIFAR_FORMATS, type CifarName } from "../../src/data/cifar.ts";

export interface CifarFixture {
  /** Per data file name: its bytes. */
  files: Map<string, Uint8Array>;
  /** Expected decoded train/test images (NCHW) and class labels. */
  expected: Record<"train" | "test", { images: Uint8Array; labels: Uint8Array }>;
}

/** Pixel value of image `n` (global in its split), channel c, row y, column x. */
export function pixelValue(n: number, c: number, y: number, x: number): number {
  return (n * 31 + c * 85 + y * 7 + x * 3) & 0xff;
}

/**
 * Builds `records` records per data file. Labels cycle through the classes, offset per file;
 * CIFAR-100 coarse labels are fine % 20.
 */
export function makeCifarFixture(which: CifarName, records: number): CifarFixture {
  const f = CIFAR_FORMATS[which];
  const recordBytes = f.labelBytes + 3072;
  const files = new Map<string, Uint8Array>();
  const expected = {} as CifarFixture["expected"];
  for (const split of ["train", "test"] as const) {
    const list = f.files[split];
    const images = new Uint8Array(list.length * records * 3072);
    const labels = new Uint8Array(list.length * records);
    let n = 0;
    list.forEach((file, k) => {
      const bytes = new Uint8Array(records * recordBytes);
      for (let r = 0; r < records; r++, n++) {
        const label = (n * 3 + k + (split === "test" ? 5 : 0)) % f.classes.length;
        const at = r * recordBytes;
        if (which === "cifar100") {
          bytes[at] = label % 20;
          bytes[at + 1] = label;
        } else {
          bytes[at] = label;
        }
        labels[n] = label;
        for (let c = 0; c < 3; c++) {
          for (let y = 0; y < 32; y++) {
            for (let x = 0; x < 32; x++) {
              const v = pixelValue(n, c, y, x);
              bytes[at + f.labelBytes + c * 1024 + y * 32 + x] = v; // official: R plane, G plane, B plane
              images[n * 3072 + c * 1024 + y * 32 + x] = v;
            }
          }
        }
      }
      files.set(file.name, bytes);
    });
    expected[split] = { images, labels };
  }
  return { files, expected };
}

export async function writeFixture(dir: string, fixture: CifarFixture): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  for (const [name, bytes] of fixture.files) await Deno.writeFile(`${dir}/${name}`, bytes);
}
