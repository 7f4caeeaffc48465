/**
 * The picture of the paper's Figure 3 for our run: for a few test samples, rows of
 *   clean | adversarial | transformed (noise + missing blocks, what the purifier sees) |
 *   purified by AP | purified by each AToP mode.
 * The adversarial images are the evaluation's full-gradient attack on one row; every purifier
 * sees the same transform draw (fixed seed), so the rows differ only by the purifier.
 */
import { noGrad } from "../autograd/tape.ts";
import type { ExampleSet } from "../eval/protocol.ts";
import { type Image, imageGrid } from "../io/png.ts";
import { fromArray } from "../ops/creation.ts";
import { manualSeed } from "../ops/random.ts";
import { slice } from "../ops/shape_ops.ts";
import { toUnit } from "../purify/pipeline.ts";
import { RandomTransform } from "../purify/transforms.ts";
import { tidy } from "../tensor/scope.ts";
import type { RunFolder } from "../train/run_folder.ts";
import type { StudyConfig } from "./config.ts";
import { studyPurifier } from "./run.ts";

export interface FigureRow {
  label: string;
  images: Float32Array;
}

/** The rows of the figure (host images in [0, 1]), from one row's examples of an attack. */
export async function figureRows(
  config: StudyConfig,
  run: RunFolder,
  examples: ExampleSet,
  /** What the adversarial row shows (for its label). */
  description: string,
  /** The attack (its label in the examples) whose images are shown. */
  attackLabel: string,
  purifiers: { label: string; stage: string }[],
): Promise<FigureRow[]> {
  const [c, h, w] = examples.shape;
  const n = examples.positions.length;
  const adversarialHost = examples.adversarial[attackLabel].slice();
  // Points a sequential suite skipped are NaN: show the clean image there.
  for (let e = 0; e < adversarialHost.length; e++) {
    if (!Number.isFinite(adversarialHost[e])) adversarialHost[e] = examples.clean[e];
  }
  const transform = new RandomTransform(config.pretrain.rt);
  const x = fromArray(adversarialHost, [n, c, h, w]);
  manualSeed(config.pretrain.seed + 7);
  const draw = transform.draw(x.shape);
  const rows: FigureRow[] = [
    { label: "clean", images: examples.clean },
    { label: `adversarial: ${description}`, images: adversarialHost },
  ];
  try {
    // The image channels of the generator input (first copy for RT3), back in [0, 1].
    const seen = tidy(() => toUnit(slice(transform.apply(x, draw), [0, 0, 0, 0], [n, c, h, w])));
    rows.push({ label: "transformed", images: new Float32Array(await seen.toArray()) });
    seen.dispose();
    for (const p of purifiers) {
      const generator = await studyPurifier(config, run, p.stage, c);
      generator.eval();
      try {
        const purified = tidy(() =>
          noGrad(() => toUnit(transform.combine(generator.forward(transform.apply(x, draw)), draw)))
        );
        rows.push({ label: `purified: ${p.label}`, images: new Float32Array(await purified.toArray()) });
        purified.dispose();
      } finally {
        generator.dispose();
      }
    }
  } finally {
    x.dispose();
    draw.mask.dispose();
    draw.noise?.dispose();
  }
  return rows;
}

/** The rows laid out as one PNG (one row of samples per figure row). */
export function figureImage(rows: FigureRow[], shape: readonly [number, number, number]): Image {
  const [c, h, w] = shape;
  const d = c * h * w;
  const count = rows[0].images.length / d;
  const all = new Float32Array(rows.length * count * d);
  rows.forEach((r, i) => all.set(r.images, i * count * d));
  return imageGrid(all, [rows.length * count, c, h, w], { cols: count, scale: h <= 32 ? 3 : 1, pad: 2 });
}
