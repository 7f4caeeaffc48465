/**
 * Module: the base of layers and models (PyTorch-style). A module owns named parameters
 * (trainable tensors), buffers (state such as batchnorm running statistics) and child modules;
 * names join with dots (`layer1.0.conv1.weight`) so checkpoints match PyTorch's state_dict keys.
 */
import { keep } from "../tensor/scope.ts";
import type { Tensor } from "../tensor/tensor.ts";

export abstract class Module {
  /** Training mode (batch statistics, dropout...) or evaluation mode. */
  training = true;
  readonly #params = new Map<string, Tensor>();
  readonly #buffers = new Map<string, Tensor>();
  readonly #children = new Map<string, Module>();

  abstract forward(x: Tensor): Tensor;

  /** Registers a trainable parameter: it gets `requiresGrad` and lives until `dispose()`. */
  protected param(name: string, t: Tensor): Tensor {
    this.#checkName(name);
    t.requiresGrad = true;
    t.name = name;
    this.#params.set(name, keep(t));
    return t;
  }

  /** Registers a non-trainable state tensor saved in checkpoints. */
  protected buffer(name: string, t: Tensor): Tensor {
    this.#checkName(name);
    t.name = name;
    this.#buffers.set(name, keep(t));
    return t;
  }

  /** Registers a child module under `name`. */
  protected child<M extends Module>(name: string, m: M): M {
    this.#checkName(name);
    this.#children.set(name, m);
    return m;
  }

  #checkName(name: string): void {
    if (!name || name.includes(".")) throw new Error(`Module: invalid name '${name}'`);
    if (this.#params.has(name) || this.#buffers.has(name) || this.#children.has(name)) {
      throw new Error(`Module: '${name}' is registered twice`);
    }
  }

  children(): [string, Module][] {
    return [...this.#children];
  }

  /** Parameters with their dotted names, depth first in registration order. */
  /**
   * Parameters by dotted name, each tensor once (as PyTorch's named_parameters): a parameter
   * shared by two layers (tied weights) keeps its first name, so an optimizer updates it once.
   */
  namedParameters(prefix = ""): [string, Tensor][] {
    const seen = new Set<Tensor>();
    return this.#allNamedParameters(prefix).filter(([, t]) => !seen.has(t) && seen.add(t));
  }

  /** Every (name, parameter) pair, a shared parameter under each of its names (state dicts). */
  #allNamedParameters(prefix: string): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.#params) out.push([prefix + n, t]);
    for (const [n, c] of this.#children) out.push(...c.#allNamedParameters(`${prefix}${n}.`));
    return out;
  }

  namedBuffers(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.#buffers) out.push([prefix + n, t]);
    for (const [n, c] of this.#children) out.push(...c.namedBuffers(`${prefix}${n}.`));
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Parameters and buffers by dotted name: what a checkpoint holds. */
  stateDict(): Record<string, Tensor> {
    return Object.fromEntries([...this.#allNamedParameters(""), ...this.namedBuffers()]);
  }

  /** Number of trainable scalars. */
  parameterCount(): number {
    return this.parameters().reduce((n, t) => n + t.size, 0);
  }

  /** Sets training mode on this module and all children. */
  train(mode = true): this {
    this.training = mode;
    for (const [, c] of this.#children) c.train(mode);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Freezes (or unfreezes) all parameters: gradients still flow through, none accumulate. */
  requiresGrad(flag: boolean): this {
    for (const t of this.parameters()) t.requiresGrad = flag;
    return this;
  }

  /**
   * Frees this module's parameters and buffers, then disposes every child through its own
   * `dispose()`, so that a child's override (tensors it keeps outside parameters and buffers,
   * e.g. DeepFill's patch kernels) runs wherever the child sits in the tree.
   */
  dispose(): void {
    for (const t of [...this.#params.values(), ...this.#buffers.values()]) {
      t.grad?.dispose();
      t.dispose();
    }
    for (const c of this.#children.values()) c.dispose();
  }
}

/** Runs children in order. Children are named "0", "1", ... like torch.nn.Sequential. */
export class Sequential extends Module {
  readonly layers: Module[];

  constructor(...layers: Module[]) {
    super();
    this.layers = layers.map((m, i) => this.child(String(i), m));
  }

  forward(x: Tensor): Tensor {
    let y = x;
    for (const m of this.layers) y = m.forward(y);
    return y;
  }
}

/** Wraps a function of one tensor (an activation) as a module. */
export class Lambda extends Module {
  constructor(readonly label: string, private fn: (x: Tensor) => Tensor) {
    super();
  }

  forward(x: Tensor): Tensor {
    return this.fn(x);
  }
}
