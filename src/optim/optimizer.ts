/**
 * The optimizer base: a set of named parameters (tensors with `requiresGrad`, whose `.grad`
 * `loss.backward()` fills), per-parameter state buffers on the GPU, and a step count.
 *
 * `step()` updates every parameter that has a gradient with one fused kernel (see
 * shaders/optim.ts) that rewrites the parameter and its state in place. Nothing is read back:
 * a training step stays entirely on the GPU. Parameters without a gradient are skipped, and
 * their own step count (used by Adam's bias correction) does not advance, as in PyTorch.
 */
import { currentGpu } from "../device/runtime.ts";
import { mapElements } from "../ops/elementwise.ts";
import { zeros } from "../ops/creation.ts";
import { keep } from "../tensor/scope.ts";
import { fmt, sameShape, ShapeError } from "../tensor/shape.ts";
import { Tensor } from "../tensor/tensor.ts";

/**
 * Parameters by name: a record or Map (e.g. a module's named parameters), an iterable of
 * [name, tensor] pairs, or a plain array (named by `tensor.name`, else by position).
 */
export type NamedParams = Record<string, Tensor> | Iterable<[string, Tensor]> | Tensor[] | [string, Tensor][];

/** Everything needed to resume an optimizer exactly (checkpoints). */
export interface OptimizerState {
  /** Number of `step()` calls. */
  step: number;
  /** Steps taken by each parameter that has state (parameters without a gradient lag behind). */
  paramSteps: Record<string, number>;
  /**
   * State buffers keyed "<parameter name>.<buffer name>", e.g. "fc.weight.exp_avg". From
   * `state()` they are views of the live buffers (disposing them is safe; read them before the
   * next step). `loadState()` copies them, so the caller keeps ownership of what it passes.
   */
  tensors: Record<string, Tensor>;
}

/** Per-parameter state: buffers by name (e.g. exp_avg) and the parameter's own step count. */
export interface ParamState {
  step: number;
  buffers: Record<string, Tensor>;
}

function toEntries(params: NamedParams): [string, Tensor][] {
  if (Array.isArray(params)) {
    // Either [name, tensor] pairs (Module.namedParameters()) or bare tensors.
    return (params as (Tensor | [string, Tensor])[]).map((p, i): [string, Tensor] =>
      p instanceof Tensor ? [p.name || `param${i}`, p] : p
    );
  }
  if (Symbol.iterator in params) return [...(params as Iterable<[string, Tensor]>)];
  return Object.entries(params as Record<string, Tensor>);
}

/**
 * Which parameter tensors share an update dispatch (shaders/optim.ts): those of at most
 * `smallTensor` elements, `maxTensors` at a time. ResNet-8's SGD step: 29 dispatches -> 8.
 */
export const UPDATE_GROUPING = { smallTensor: 4096, maxTensors: 8 };

/** One parameter's update of a step: the tensor, its gradient and its state. */
export interface ParamUpdate {
  param: Tensor;
  grad: Tensor;
  state: ParamState;
}

export abstract class Optimizer {
  /** Learning rate; schedules set it before each step. */
  lr: number;
  readonly params: ReadonlyMap<string, Tensor>;
  #step = 0;
  #state = new Map<string, ParamState>();

  /** Names of each parameter's state buffers, in the order the kernel binds them. */
  protected abstract readonly bufferNames: readonly string[];

  constructor(readonly name: string, params: NamedParams, lr: number) {
    checkHyper(name, "lr", lr, 0);
    this.lr = lr;
    const map = new Map<string, Tensor>();
    const names = new Map<Tensor, string>();
    for (const [key, t] of toEntries(params)) {
      if (map.has(key)) throw new ShapeError(name, `two parameters are named "${key}"; names must be unique`);
      // One tensor under two names would be updated twice per step, with two states.
      const earlier = names.get(t);
      if (earlier !== undefined) {
        throw new ShapeError(
          name,
          `"${key}" and "${earlier}" are the same tensor; list a shared parameter once`,
        );
      }
      names.set(t, key);
      if (t.dtype !== "f32") {
        throw new ShapeError(name, `parameter "${key}" is ${t.describe()}; only f32 is trained`);
      }
      map.set(key, t);
    }
    this.params = map;
  }

  /** Number of `step()` calls so far. */
  get stepCount(): number {
    return this.#step;
  }

  /** Disposes every parameter's gradient (call between steps: backward() accumulates). */
  zeroGrad(): void {
    for (const p of this.params.values()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /**
   * Updates every parameter that has a gradient, in place, on the GPU. All-or-nothing: every
   * gradient and the learning rate are checked before any state changes, so a step that throws
   * can be retried once the cause is fixed.
   */
  step(): void {
    const op = `${this.name}.step`;
    checkHyper(op, "lr", this.lr, 0);
    const withGrad: [string, Tensor, Tensor][] = [];
    for (const [key, p] of this.params) {
      const g = p.grad;
      if (!g) continue;
      if (g.isDisposed) {
        throw new ShapeError(
          op,
          `gradient of "${key}" was disposed but not set to null (zeroGrad() does both)`,
        );
      }
      if (g.dtype !== "f32" || !sameShape(g.shape, p.shape)) {
        throw new ShapeError(
          op,
          `gradient of "${key}" is ${g.describe()} but the parameter is f32${fmt(p.shape)}`,
        );
      }
      withGrad.push([key, p, g]);
    }
    this.#step++;
    const ready: ParamUpdate[] = [];
    for (const [key, p, g] of withGrad) {
      let state = this.#state.get(key);
      if (!state) {
        // keep(): state must outlive any tidy() scope the first step happens to run in.
        const buffers = Object.fromEntries(this.bufferNames.map((b) => [b, keep(zeros(p.shape))]));
        state = { step: 0, buffers };
        this.#state.set(key, state);
      }
      state.step++;
      if (p.size > 0) ready.push({ param: p, grad: g, state });
    }
    this.updateAll(ready);
  }

  /**
   * Updates every parameter that has a gradient this step. Tensors of at most
   * `UPDATE_GROUPING.smallTensor` elements share dispatches, `UPDATE_GROUPING.maxTensors` at a
   * time (fewer if the device's storage-binding limit says so); larger ones get one each.
   */
  protected updateAll(items: ParamUpdate[]): void {
    const perTensor = 2 + this.bufferNames.length;
    const limit = currentGpu().limits.maxStorageBuffersPerShaderStage;
    const groupSize = Math.max(1, Math.min(UPDATE_GROUPING.maxTensors, Math.floor(limit / perTensor)));
    let group: ParamUpdate[] = [];
    for (const item of items) {
      if (item.param.size > UPDATE_GROUPING.smallTensor) this.launchUpdate([item]);
      else {
        group.push(item);
        if (group.length === groupSize) {
          this.launchUpdate(group);
          group = [];
        }
      }
    }
    if (group.length) this.launchUpdate(group);
  }

  /**
   * One dispatch updating `group` in place (each tensor's parameter, gradient and state buffers
   * bound in that order); `state.step` counts from 1.
   */
  protected abstract launchUpdate(group: ParamUpdate[]): void;

  /** The step count and state buffers (views of the live buffers), for checkpoints. */
  state(): OptimizerState {
    const paramSteps: Record<string, number> = {};
    const tensors: Record<string, Tensor> = {};
    for (const [key, s] of this.#state) {
      paramSteps[key] = s.step;
      for (const [b, t] of Object.entries(s.buffers)) tensors[`${key}.${b}`] = t.alias();
    }
    return { step: this.#step, paramSteps, tensors };
  }

  /**
   * Restores what `state()` returned (possibly from another optimizer over parameters with
   * the same names and shapes). Tensors are copied; the caller still owns them.
   */
  loadState(state: OptimizerState): void {
    const op = `${this.name}.loadState`;
    const loaded = new Map<string, ParamState>();
    for (const [key, step] of Object.entries(state.paramSteps)) {
      const p = this.params.get(key);
      if (!p) throw new ShapeError(op, `state for unknown parameter "${key}"`);
      if (!Number.isInteger(step) || step < 0) throw new ShapeError(op, `step of "${key}" is ${step}`);
      for (const b of this.bufferNames) {
        const t = state.tensors[`${key}.${b}`];
        if (!t) throw new ShapeError(op, `missing state tensor "${key}.${b}"`);
        if (!sameShape(t.shape, p.shape)) {
          throw new ShapeError(
            op,
            `state tensor "${key}.${b}" is ${fmt(t.shape)}, parameter is ${fmt(p.shape)}`,
          );
        }
      }
    }
    for (const [key, step] of Object.entries(state.paramSteps)) {
      const buffers = Object.fromEntries(this.bufferNames.map((b) => {
        const copy = mapElements(op, "a", [state.tensors[`${key}.${b}`]]);
        return [b, keep(copy)];
      }));
      loaded.set(key, { step, buffers });
    }
    this.disposeState();
    this.#state = loaded;
    this.#step = state.step;
  }

  /** Frees the state buffers (the optimizer starts over as if new, keeping its step count). */
  disposeState(): void {
    for (const s of this.#state.values()) for (const t of Object.values(s.buffers)) t.dispose();
    this.#state.clear();
  }
}

/** Throws unless `value` is a finite number >= min (and < maxExclusive when given). */
export function checkHyper(
  op: string,
  name: string,
  value: number,
  min: number,
  maxExclusive?: number,
): void {
  if (
    typeof value !== "number" || !Number.isFinite(value) || value < min ||
    (maxExclusive !== undefined && value >= maxExclusive)
  ) {
    const range = maxExclusive === undefined ? `>= ${min}` : `in [${min}, ${maxExclusive})`;
    throw new ShapeError(op, `${name} must be a finite number ${range}, got ${value}`);
  }
}
