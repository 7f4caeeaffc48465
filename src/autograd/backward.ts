/**
 * Reverse pass over the tape, `loss.backward()`, `grad()` and `gradScope()`.
 */
import { add } from "../ops/arithmetic.ts";
import { onesLike, zerosLike } from "../ops/creation.ts";
import { keep, tidy } from "../tensor/scope.ts";
import { fmt, sameShape, ShapeError } from "../tensor/shape.ts";
import { autogradHooks, DisposedTensorError, type Tensor } from "../tensor/tensor.ts";
import { activeTape, Tape, type TapeNode, withTape } from "./tape.ts";

/** A backward pass met a tensor written in place after an op that reads it was recorded. */
export class InPlaceModificationError extends Error {
  override name = "InPlaceModificationError";
}

/**
 * A rule computes its gradient from the tensors its op read and wrote, as they are when the
 * backward runs: if one of them was written in place after the op was recorded (an optimizer
 * step, a kernel writing into it), the gradient would silently come from the new values.
 * PyTorch refuses that with its version counters; so does this, with the buffers' write counts.
 * A freed tensor is left to the rule, whose DisposedTensorError says more.
 */
function checkUnchanged(node: TapeNode): void {
  node.saved.forEach((t, i) => {
    if (t.isDisposed || t.version === node.versions[i]) return;
    const input = node.inputs.indexOf(t);
    const isOutput = input < 0 && t === node.output;
    const which = input >= 0 ? `input ${input}` : isOutput ? "output" : "saved tensor";
    const writes = t.version - node.versions[i];
    const fix = isOutput
      ? "write into a clone() of the output instead"
      : "give the op a clone() of the tensor to keep";
    throw new InPlaceModificationError(
      `${node.op}.backward: its ${which} ${t.describe()} was written ${writes} time(s) in place since the ` +
        `forward pass recorded the op, so its gradient would come from the new values. Run backward() ` +
        `before changing it (e.g. before optimizer.step()), or ${fix}.`,
    );
  });
}

/**
 * Walks `tape` backwards from `loss`; returns the gradient of every tracked tensor that
 * `loss` depends on, keyed by tensor id. Intermediate gradients are disposed as soon as they
 * have been propagated; the caller owns the returned ones.
 */
function propagate(
  tape: Tape,
  loss: Tensor,
  seed: Tensor | undefined,
  op: string,
): Map<number, { tensor: Tensor; grad: Tensor }> {
  if (!tape.isTracked(loss)) {
    throw new Error(
      `${op}: the loss does not depend on any tensor that needs a gradient ` +
        `(set requiresGrad on parameters, or pass the inputs to grad())`,
    );
  }
  if (seed && !sameShape(seed.shape, loss.shape)) {
    throw new ShapeError(op, `seed gradient ${fmt(seed.shape)} does not match loss ${fmt(loss.shape)}`);
  }
  if (!seed && loss.size !== 1) {
    throw new ShapeError(op, `loss must be a scalar (got ${fmt(loss.shape)}); pass a seed gradient`);
  }
  const grads = new Map<number, { tensor: Tensor; grad: Tensor }>();
  const accumulate = (tensor: Tensor, grad: Tensor) => {
    const prev = grads.get(tensor.id);
    if (prev) {
      grads.set(tensor.id, { tensor, grad: add(prev.grad, grad) });
      prev.grad.dispose();
      grad.dispose();
    } else grads.set(tensor.id, { tensor, grad });
  };
  // Each stored gradient is its own view, so disposing one never frees another's buffer.
  accumulate(loss, seed ? seed.alias() : onesLike(loss));

  for (let k = tape.nodes.length - 1; k >= 0; k--) {
    const node = tape.nodes[k];
    const dy = grads.get(node.output.id)?.grad;
    if (!dy) continue;
    grads.delete(node.output.id);
    checkUnchanged(node);
    const takeGradient = (i: number) => {
      const pending = grads.get(node.inputs[i].id)?.grad;
      // Only a buffer no other tensor views may be written in place.
      if (!pending || pending.storage.refs !== 1) return undefined;
      grads.delete(node.inputs[i].id);
      return pending;
    };
    const dxs = withTape(null, () => {
      try {
        return node.backward(dy, takeGradient);
      } catch (e) {
        if (!(e instanceof DisposedTensorError)) throw e;
        throw new DisposedTensorError(
          `${node.op}.backward: a tensor this op saved for its gradient was freed (${e.message}). ` +
            `A tidy() inside the gradient scope frees what it does not return, ops recorded in it ` +
            `included: return the loss from the tidy() or do not wrap recorded ops in one; or ` +
            `backward() ran twice through an op that frees what it saved.`,
          { cause: e },
        );
      }
    });
    node.inputs.forEach((x, i) => {
      const dx = dxs[i];
      if (!dx || !tape.isTracked(x)) return;
      if (!sameShape(dx.shape, x.shape)) {
        throw new ShapeError(
          `${node.op}.backward`,
          `gradient for input ${i} has shape ${fmt(dx.shape)} but the input is ${fmt(x.shape)}`,
        );
      }
      accumulate(x, dx.alias());
    });
    for (const dx of dxs) if (dx && dx !== dy) dx.dispose();
    dy.dispose();
  }
  return grads;
}

/**
 * Back-propagates from a scalar loss, accumulating into `.grad` of every tensor with
 * `requiresGrad` (PyTorch semantics: call the optimizer's zeroGrad between steps).
 * Must be called inside `gradScope()`, which recorded the forward pass.
 */
export function backward(loss: Tensor, seed?: Tensor): void {
  const tape = activeTape();
  if (!tape || tape.mode !== "params") {
    throw new Error(
      "backward: no gradient scope is recording; run the forward pass and backward() inside gradScope(() => ...)",
    );
  }
  for (const { tensor: x, grad: g } of propagate(tape, loss, seed, "backward").values()) {
    if (!x.requiresGrad) g.dispose();
    else if (x.grad) {
      const sum = add(x.grad, g);
      x.grad.dispose();
      g.dispose();
      x.grad = keep(sum);
    } else x.grad = keep(g);
  }
}

autogradHooks.backward = backward;

/**
 * Records `fn` with parameters (tensors with `requiresGrad`) as leaves; tensors it creates
 * and does not return are disposed when it ends (like `tidy`). Call `loss.backward()` inside.
 */
export function gradScope<T>(fn: () => T): T {
  return tidy(() => withTape(new Tape("params"), fn));
}

/**
 * Functional gradient: d fn(inputs) / d inputs, without touching any parameter's `.grad`
 * (parameters act as constants). `fn` must return a scalar. Intermediates are freed.
 *
 * `fn` runs on a tape of its own: the returned gradients are constants (PyTorch's default,
 * create_graph=False), and an enclosing gradScope or grad() does not see the ops inside `fn`,
 * so `value` carries no gradient to them either.
 */
export function grad(
  fn: (...inputs: Tensor[]) => Tensor,
  inputs: Tensor[],
  seed?: Tensor,
): { value: Tensor; grads: Tensor[] } {
  inputs.forEach((x, i) => {
    if (x.isDisposed) throw new DisposedTensorError(`grad: input ${i} (${x.describe()}) was disposed`);
    if (x.dtype !== "f32") {
      throw new TypeError(`grad: input ${i} is ${x.describe()}; gradients exist for f32 tensors only`);
    }
  });
  return tidy(() => {
    const tape = new Tape("inputs", inputs);
    const value = withTape(tape, () => fn(...inputs));
    const all = propagate(tape, value, seed, "grad");
    // An input that does not influence the value gets a zero gradient.
    const grads = inputs.map((x) => all.get(x.id)?.grad ?? zerosLike(x));
    return { value, grads };
  });
}

/** A tensor sharing `t`'s data that gradients do not flow through. */
export function detach(t: Tensor): Tensor {
  return t.alias();
}
