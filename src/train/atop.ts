/**
 * The `atop` stage: adversarial fine-tuning of a pre-trained purifier in front of a frozen
 * classifier f (Lin et al., ICLR 2024):
 *
 *   L(θ_g) = l_g(x) + λ · CE(f((x̂_adv + 1)/2), y),   x̂_adv = g(t(x_adv)),   l_g = Σ_stages |x − g(t(x))|₁
 *
 * One random-transform draw (mask and noise) is shared by the clean and the adversarial branch.
 * The CE term is on from epoch `ceStartEpoch` (1-based). f stays in eval mode with its
 * parameters frozen: gradients flow through it into g, its weights and batchnorm statistics
 * never change. Modes (how x_adv is made, fresh each step):
 * - `fgsm-transfer`: FGSM on f alone (a transfer attack), as the released code does;
 * - `adaptive`: FGSM (steps 1) or PGD-k through the whole pipeline f∘g∘t with fresh transform
 *   draws per gradient (EOT) — the attack the paper's equation describes;
 * - `clean`: no attack, CE on the purified clean image (the ablation).
 */
import { fgsm } from "../attacks/fgsm.ts";
import { pgd } from "../attacks/pgd.ts";
import type { Norm } from "../attacks/types.ts";
import { gradScope } from "../autograd/backward.ts";
import { noGrad } from "../autograd/tape.ts";
import type { Module } from "../nn/module.ts";
import { add, mulScalar } from "../ops/arithmetic.ts";
import { crossEntropy } from "../ops/loss.ts";
import { correctCount } from "../ops/metrics.ts";
import { concat } from "../ops/shape_ops.ts";
import { Adam } from "../optim/adam.ts";
import {
  PurifiedClassifier,
  type Purifier,
  reconstructionLoss,
  toSigned,
  toUnit,
} from "../purify/pipeline.ts";
import { RandomTransform } from "../purify/transforms.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { mixSeed } from "../eval/protocol.ts";
import type { AdamSettings, PretrainConfig } from "./pretrain.ts";
import { evaluatePurifier } from "./purifier_eval.ts";
import type { RunFolder } from "./run_folder.ts";
import { openStageData, type StageDataOptions } from "./stage_data.ts";
import { type LoopSettings, type RunOptions, runStage, type StageResult } from "./stage_runner.ts";

export type AtopMode = "fgsm-transfer" | "adaptive" | "clean";
export const ATOP_MODES: readonly AtopMode[] = ["fgsm-transfer", "adaptive", "clean"];

export interface AtopConfig extends LoopSettings, StageDataOptions {
  mode: AtopMode;
  /** Purifier and transform: those of the pre-trained generator. */
  purifier: PretrainConfig["purifier"];
  rt: PretrainConfig["rt"];
  lambda: number;
  /** First epoch (1-based) with the CE term; before it only l_g trains (ATOP.md: 3). */
  ceStartEpoch: number;
  attack: {
    norm: Norm;
    eps: number;
    /** 1: FGSM; k > 1: PGD-k (adaptive mode only). */
    steps: number;
    /** PGD step size (default max(ε/4, 2.5·ε/steps), `defaultPgdStepSize`). */
    stepSize: number | null;
    /** EOT draws per gradient (adaptive mode). */
    eot: number;
  };
  optim: AdamSettings;
  evalPoints: number;
  evalBatchSize: number;
}

/** Stage (checkpoint) name of a mode, e.g. `atop-fgsm-transfer`. */
export function atopStageName(mode: AtopMode): string {
  return `atop-${mode}`;
}

/** The adversarial images of one step (a new tensor), per the mode. */
function adversarialImages(
  config: AtopConfig,
  pipeline: PurifiedClassifier,
  x: Tensor,
  y: Tensor,
  step: number,
): Tensor | null {
  const { attack } = config;
  const threat = { norm: attack.norm, eps: attack.eps };
  switch (config.mode) {
    case "clean":
      return null;
    case "fgsm-transfer":
      return fgsm((t) => pipeline.classifier.forward(t), x, y, threat);
    case "adaptive":
      return attack.steps === 1
        ? fgsm(pipeline.model, x, y, threat, { eot: attack.eot })
        : pgd(pipeline.model, x, y, threat, {
          steps: attack.steps,
          stepSize: attack.stepSize ?? undefined,
          eot: attack.eot,
          seed: mixSeed(config.seed, step, 0xa7),
        });
  }
}

/**
 * Fine-tunes `generator` (updated in place; start it from the pre-trained weights) in front of
 * `classifier` (frozen and in eval mode for the stage; trainable and in its earlier mode after).
 * Returns the stage result.
 */
export async function fineTunePurifier(
  config: AtopConfig,
  generator: Purifier,
  classifier: Module,
  run: RunFolder,
  options: RunOptions = {},
): Promise<StageResult> {
  if (!ATOP_MODES.includes(config.mode)) {
    throw new RangeError(`atop: unknown mode "${config.mode}" (${ATOP_MODES.join(", ")})`);
  }
  const data = await openStageData(config);
  const transform = new RandomTransform(config.rt);
  const pipeline = new PurifiedClassifier(transform, generator, classifier);
  const optimizer = new Adam({
    params: generator.namedParameters(),
    lr: config.optim.lr,
    betas: [config.optim.beta1, config.optim.beta2],
  });
  const evalThreat = { norm: config.attack.norm, eps: config.attack.eps };
  const classifierWasTraining = classifier.training;
  classifier.eval();
  classifier.requiresGrad(false);
  generator.train();
  try {
    return await runStage(
      {
        stage: atopStageName(config.mode),
        config,
        loader: data.loader,
        modules: { generator },
        optimizers: { generator_optim: optimizer },
        metrics: ["loss", "l1", "ce", "accuracy"],
        metadata: { datasetShape: data.shape, classes: data.classes },
        describe:
          `${atopStageName(config.mode)}: fine-tuning the purifier (${
            generator.parameterCount().toLocaleString("en")
          } parameters) in front of the frozen classifier, ${config.epochs} epochs of ${data.loader.batchesPerEpoch} ` +
          `steps, λ ${config.lambda} from epoch ${config.ceStartEpoch}, ` +
          (config.mode === "clean"
            ? "CE on purified clean images"
            : `${
              config.mode === "adaptive" && config.attack.steps > 1 ? `PGD-${config.attack.steps}` : "FGSM"
            } ` +
              `${config.attack.norm} eps ${config.attack.eps.toFixed(4)}` +
              (config.mode === "adaptive"
                ? ` through the pipeline (EOT ${config.attack.eot})`
                : " on f alone")),
        step(batch, step, epoch) {
          const { images: x, labels: y } = batch;
          const n = y.size;
          const ceOn = epoch + 1 >= config.ceStartEpoch && config.lambda > 0;
          const xAdv = adversarialImages(config, pipeline, x, y, step);
          const draw = transform.draw(x.shape); // shared by both branches
          optimizer.zeroGrad();
          const stats = gradScope(() => {
            const stages = pipeline.stages(x, draw);
            const l1 = reconstructionLoss(stages, toSigned(x));
            // The clean ablation reuses the clean branch's output: same image, same draw.
            const logitsOf = () =>
              xAdv ? pipeline.logits(xAdv, draw) : classifier.forward(toUnit(stages.at(-1)!));
            const logits = ceOn ? logitsOf() : noGrad(logitsOf);
            const ce = crossEntropy(logits, y);
            const loss = ceOn ? add(l1, mulScalar(ce, config.lambda)) : l1;
            loss.backward();
            return noGrad(() =>
              concat([
                mulScalar(concat([loss.alias([1]), l1.alias([1]), ce.alias([1])], 0), n),
                correctCount(logits, y).alias([1]),
              ], 0)
            );
          });
          optimizer.step();
          return stats;
        },
        evaluate: () =>
          evaluatePurifier({ transform, generator, classifier }, data.test, {
            limit: config.evalPoints,
            batchSize: config.evalBatchSize,
            seed: config.seed + 1,
            fgsmThreat: evalThreat,
          }),
      },
      run,
      options,
    );
  } finally {
    classifier.requiresGrad(true);
    classifier.train(classifierWasTraining);
    data.dispose();
  }
}
