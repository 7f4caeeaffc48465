/**
 * Learning-rate schedules: pure functions from a step (or epoch) index, counted from 0, to a
 * learning rate, computed on the host. Closed forms of the PyTorch schedulers, so a resumed run
 * only needs the step index to continue exactly.
 */
import { ShapeError } from "../tensor/shape.ts";

/** Learning rate for step (or epoch) `step`, counted from 0. */
export type Schedule = (step: number) => number;

function checkStep(op: string, step: number): void {
  if (!Number.isInteger(step) || step < 0) {
    throw new ShapeError(op, `step must be an integer >= 0, got ${step}`);
  }
}

/** The same learning rate at every step. */
export function constantLR(base: number): Schedule {
  return () => base;
}

/** torch StepLR: base * gamma^floor(step / stepSize). */
export function stepLR(
  { base, stepSize, gamma = 0.1 }: { base: number; stepSize: number; gamma?: number },
): Schedule {
  if (!Number.isInteger(stepSize) || stepSize < 1) {
    throw new ShapeError("stepLR", `stepSize must be an integer >= 1, got ${stepSize}`);
  }
  return (step) => {
    checkStep("stepLR", step);
    return base * gamma ** Math.floor(step / stepSize);
  };
}

/** torch MultiStepLR: base * gamma^(number of milestones <= step). */
export function multiStepLR(
  { base, milestones, gamma = 0.1 }: { base: number; milestones: number[]; gamma?: number },
): Schedule {
  return (step) => {
    checkStep("multiStepLR", step);
    return base * gamma ** milestones.filter((m) => m <= step).length;
  };
}

/**
 * Linear warmup, then torch CosineAnnealingLR's closed form:
 *   step < warmup:  base * (step + 1) / warmup
 *   otherwise:      min + (base - min) * (1 + cos(pi * t / T)) / 2,  t = step - warmup, T = total - warmup
 * Past `total` steps the rate stays at `min` (torch's formula would rise again).
 */
export function cosineLR(
  { base, total, min = 0, warmup = 0 }: { base: number; total: number; min?: number; warmup?: number },
): Schedule {
  if (!Number.isInteger(warmup) || warmup < 0 || !Number.isInteger(total) || total <= warmup) {
    throw new ShapeError(
      "cosineLR",
      `need integers 0 <= warmup < total, got warmup ${warmup}, total ${total}`,
    );
  }
  return (step) => {
    checkStep("cosineLR", step);
    if (step < warmup) return base * (step + 1) / warmup;
    const t = Math.min(step - warmup, total - warmup);
    return min + (base - min) * (1 + Math.cos(Math.PI * t / (total - warmup))) / 2;
  };
}

/** Sets the optimizer's learning rate for `step` (call before `optimizer.step()`); returns it. */
export function applySchedule(optimizer: { lr: number }, schedule: Schedule, step: number): number {
  optimizer.lr = schedule(step);
  return optimizer.lr;
}
