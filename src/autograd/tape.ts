/**
 * The tape: reverse-mode autograd records ops only inside a gradient scope. Outside one, ops
 * run with no bookkeeping at all (inference, attacks' forward passes, optimizer updates).
 *
 * Because ops are recorded in execution order, the tape is already topologically sorted:
 * backward walks it in reverse, iteratively (no recursion, so deep nets cannot overflow the
 * JS stack).
 */
import type { Tensor } from "../tensor/tensor.ts";

/**
 * The gradient accumulated so far for input `i` of a node, handed over to its rule so that the
 * rule can add its own contribution into it in place instead of returning a new tensor that
 * the tape then adds (one elementwise pass saved: a residual block's input gets gradients from
 * both branches). Undefined when there is none yet, or when its buffer is shared with another
 * tensor (writing it would change that one too). A rule that takes it must return it, with its
 * contribution added, as that input's gradient.
 */
export type TakeGradient = (i: number) => Tensor | undefined;

/**
 * A gradient rule: given dL/d(output), returns dL/d(input) per input (null: no gradient). Most
 * rules ignore `takeGradient`.
 */
export type GradientRule = (dy: Tensor, takeGradient: TakeGradient) => (Tensor | null)[];

export interface TapeNode {
  op: string;
  inputs: Tensor[];
  output: Tensor;
  backward: GradientRule;
  /** The tensors whose values the rule reads (see `record`), and their `version` then. */
  saved: Tensor[];
  versions: number[];
}

/**
 * `params`: leaves are tensors with `requiresGrad` (training, `loss.backward()`).
 * `inputs`: leaves are only the tensors given to `grad()`; parameters act as constants, so no
 * work is spent on their gradients (attacks).
 */
export type TapeMode = "params" | "inputs";

export class Tape {
  readonly nodes: TapeNode[] = [];
  /** Ids of tensors whose gradient this tape can compute (leaves and recorded outputs). */
  readonly tracked = new Set<number>();

  constructor(readonly mode: TapeMode, leaves: Tensor[] = []) {
    for (const t of leaves) this.tracked.add(t.id);
  }

  isTracked(t: Tensor): boolean {
    return this.tracked.has(t.id) || (this.mode === "params" && t.requiresGrad);
  }
}

/** Stack of tapes; `null` entries suspend recording (noGrad, or a grad() inside training). */
const tapes: (Tape | null)[] = [];

export function activeTape(): Tape | null {
  return tapes.length ? tapes[tapes.length - 1] : null;
}

export function withTape<T>(tape: Tape | null, fn: () => T): T {
  tapes.push(tape);
  try {
    return fn();
  } finally {
    tapes.pop();
  }
}

/** True when the current scope records ops and one of `inputs` needs a gradient. */
export function needsGrad(...inputs: Tensor[]): boolean {
  const tape = activeTape();
  return tape !== null && inputs.some((t) => tape.isTracked(t));
}

/**
 * Records an op's output with its gradient rule, when a tape is active and an input needs a
 * gradient. Returns `output` so ops can `return record(...)`.
 *
 * `saved`: every tensor whose values the rule reads, inputs or not (a mask, a power-iteration
 * vector); by default every input and the output. The backward pass refuses to run the rule if
 * one of them was written since (backward.ts). An op whose rule needs only shapes (add, sum, a
 * copy, a view) passes `[]`, as PyTorch saves nothing for it: writing into its input afterwards
 * is then fine.
 */
export function record(
  op: string,
  inputs: Tensor[],
  output: Tensor,
  backward: GradientRule,
  saved?: readonly Tensor[],
): Tensor {
  const tape = activeTape();
  if (tape && inputs.some((t) => tape.isTracked(t))) {
    const kept = saved ? [...saved] : [...inputs, output];
    const versions = kept.map((t) => t.version);
    tape.nodes.push({ op, inputs, output, backward, saved: kept, versions });
    tape.tracked.add(output.id);
  }
  return output;
}

/** Runs `fn` without recording anything. */
export function noGrad<T>(fn: () => T): T {
  return withTape(null, fn);
}

export function isRecording(): boolean {
  return activeTape() !== null;
}
