/**
 * The `pretrain` stage: the purifier learns to undo the random transform.
 *
 *   L_G = Σ_stages |x − stage(t(x))|₁  (+ w·(−mean D(x̂, m)) with the GAN term)
 *   L_D = mean relu(1 − D(x, m)) + mean relu(1 + D(x̂, m))      (hinge loss, SN-PatchGAN)
 *
 * x in [−1, 1], x̂ the final output, m the mask. The L1 covers the whole image (RT2 adds noise to
 * the visible pixels too). The discriminator steps first on a detached x̂, then the generator
 * steps with the discriminator frozen (gradients flow through it, none accumulate in it).
 * A purifier that works at a multiple of the image size (DeepFill's `inputScale`: CIFAR-10 at
 * 256 px as in the paper) is judged at that size too: the discriminator sees x, x̂ and m
 * upsampled alike, so its six stride-2 convs end on a map of patches (4×4 at 256 px) rather than
 * one score per image (32 px ends at 1×1).
 */
import { gradScope } from "../autograd/backward.ts";
import { noGrad } from "../autograd/tape.ts";
import { discriminatorInput, PatchDiscriminator } from "../models/discriminator.ts";
import type { Module } from "../nn/module.ts";
import { add, addScalar, mulScalar, neg, rsubScalar } from "../ops/arithmetic.ts";
import { upsampleNearest2d } from "../ops/pool.ts";
import { manualSeed } from "../ops/random.ts";
import { mean } from "../ops/reduce.ts";
import { concat, slice } from "../ops/shape_ops.ts";
import { relu } from "../ops/unary.ts";
import { Adam } from "../optim/adam.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import {
  createPurifier,
  type Purifier,
  type PurifierConfig,
  reconstructionLoss,
  toSigned,
} from "../purify/pipeline.ts";
import { RandomTransform, type RtConfig, type RtDraw } from "../purify/transforms.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { evaluatePurifier } from "./purifier_eval.ts";
import type { RunFolder } from "./run_folder.ts";
import { openStageData, type StageDataOptions } from "./stage_data.ts";
import { type LoopSettings, type RunOptions, runStage, type StageResult } from "./stage_runner.ts";

export interface AdamSettings {
  lr: number;
  beta1: number;
  beta2: number;
}

export interface PretrainConfig extends LoopSettings, StageDataOptions {
  purifier: PurifierConfig;
  rt: RtConfig;
  generatorOptim: AdamSettings;
  /** The hinge GAN term (SN-PatchGAN discriminator); off: L1 only. */
  gan: boolean;
  ganWeight: number;
  discriminatorWidth: number;
  discriminatorOptim: AdamSettings;
  /** Test images of the per-epoch check. */
  evalPoints: number;
  evalBatchSize: number;
}

function adam(model: Module, s: AdamSettings): Optimizer {
  return new Adam({ params: model.namedParameters(), lr: s.lr, betas: [s.beta1, s.beta2] });
}

/** The mask the discriminator sees: the draw's mask (RT3: the first copy's). */
function firstMask(draw: RtDraw, n: number): Tensor {
  const [rows, c, h, w] = draw.mask.shape;
  return rows === n ? draw.mask : slice(draw.mask, [0, 0, 0, 0], [n, c, h, w]);
}

/**
 * The discriminator's input concat(image, mask), at the purifier's working scale (see the header;
 * nearest upsampling, as the purifier's own input).
 */
export function discriminatorView(image: Tensor, mask: Tensor, scale: number): Tensor {
  if (scale === 1) return discriminatorInput(image, mask);
  return discriminatorInput(upsampleNearest2d(image, scale), upsampleNearest2d(mask, scale));
}

/** The purified image x̂ in [−1, 1] (final stage) and every stage's output, for one draw. */
function purifyStages(transform: RandomTransform, generator: Purifier, x: Tensor, draw: RtDraw): Tensor[] {
  return generator.stageOutputs(transform.apply(x, draw)).map((y) => transform.combine(y, draw));
}

/** Builds the purifier of a config (seeded: reproducible initial weights). */
export function buildPurifier(config: Pick<PretrainConfig, "purifier" | "seed">, channels: number): Purifier {
  manualSeed(config.seed);
  return createPurifier(config.purifier, channels);
}

/** Pre-trains a purifier in `run`; returns the result and the trained generator (caller disposes). */
export async function pretrainPurifier(
  config: PretrainConfig,
  run: RunFolder,
  options: RunOptions = {},
): Promise<{ result: StageResult; generator: Purifier }> {
  const data = await openStageData(config);
  const channels = data.shape[0];
  const generator = buildPurifier(config, channels);
  const transform = new RandomTransform(config.rt);
  const discriminator = config.gan
    ? new PatchDiscriminator({ channels, width: config.discriminatorWidth })
    : null;
  const generatorOptim = adam(generator, config.generatorOptim);
  const discriminatorOptim = discriminator ? adam(discriminator, config.discriminatorOptim) : null;
  const metrics = config.gan ? ["loss", "l1", "dLoss", "gAdv"] : ["loss", "l1"];
  const scale = config.purifier.inputScale ?? 1;
  generator.train();
  discriminator?.train();

  /** L_D on real x and a detached x̂ (one generator forward without a tape). */
  const discriminatorStep = (x: Tensor, draw: RtDraw): Tensor => {
    const d = discriminator!;
    const mask = firstMask(draw, x.shape[0]);
    const fake = noGrad(() => purifyStages(transform, generator, x, draw).at(-1)!);
    discriminatorOptim!.zeroGrad();
    const loss = gradScope(() => {
      const real = d.forward(discriminatorView(x, mask, scale));
      const faked = d.forward(discriminatorView(fake, mask, scale));
      const l = add(mean(relu(rsubScalar(real, 1))), mean(relu(addScalar(faked, 1))));
      l.backward();
      return l;
    });
    discriminatorOptim!.step();
    return loss;
  };

  try {
    const result = await runStage(
      {
        stage: "pretrain",
        config,
        loader: data.loader,
        modules: discriminator ? { generator, discriminator } : { generator },
        optimizers: discriminator
          ? { generator_optim: generatorOptim, discriminator_optim: discriminatorOptim! }
          : { generator_optim: generatorOptim },
        metrics,
        metadata: { datasetShape: data.shape, classes: data.classes },
        describe:
          `pretrain: ${config.purifier.kind} purifier (${
            generator.parameterCount().toLocaleString("en")
          } parameters) under ${config.rt.kind} on ${config.dataset} (${data.loader.samples} images), ` +
          `${config.epochs} epochs of ${data.loader.batchesPerEpoch} steps, batch ${config.batchSize}, ` +
          `Adam lr ${config.generatorOptim.lr}` +
          (config.gan ? `, hinge GAN weight ${config.ganWeight}` : ", L1 only"),
        step(batch) {
          const n = batch.labels.size;
          const x = toSigned(batch.images);
          const draw = transform.draw(batch.images.shape);
          const dLoss = discriminator ? discriminatorStep(x, draw) : null;
          generatorOptim.zeroGrad();
          discriminator?.requiresGrad(false);
          try {
            const stats = gradScope(() => {
              // The transform takes images in [0, 1]; the losses compare in [−1, 1].
              const stages = purifyStages(transform, generator, batch.images, draw);
              const l1 = reconstructionLoss(stages, x);
              let loss = l1, gAdv: Tensor | null = null;
              if (discriminator) {
                gAdv = neg(
                  mean(discriminator.forward(discriminatorView(stages.at(-1)!, firstMask(draw, n), scale))),
                );
                loss = add(l1, mulScalar(gAdv, config.ganWeight));
              }
              loss.backward();
              return noGrad(() => {
                const parts = [loss, l1];
                if (dLoss && gAdv) parts.push(dLoss, gAdv);
                return mulScalar(concat(parts.map((p) => p.alias([1])), 0), n);
              });
            });
            generatorOptim.step();
            return stats;
          } finally {
            discriminator?.requiresGrad(true);
          }
        },
        evaluate: () =>
          evaluatePurifier({ transform, generator, classifier: null }, data.test, {
            limit: config.evalPoints,
            batchSize: config.evalBatchSize,
            seed: config.seed + 1,
          }),
      },
      run,
      options,
    );
    return { result, generator };
  } catch (e) {
    generator.dispose();
    throw e;
  } finally {
    discriminator?.dispose();
    data.dispose();
  }
}
