/**
 * Explicit tensor lifetimes. GPU memory is not reliably reclaimed by the JS garbage collector,
 * so every tensor created inside `tidy(fn)` is disposed when `fn` returns, except the tensors
 * it returns and those passed to `keep()`.
 */
export interface Disposable {
  readonly id: number;
  dispose(): void;
  readonly isDisposed: boolean;
}

const scopes: Set<Disposable>[] = [];

/** Called by every tensor on creation. */
export function track(t: Disposable): void {
  scopes[scopes.length - 1]?.add(t);
}

/** Removes a tensor from every open scope: it lives until disposed by hand. */
export function keep<T extends Disposable>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

/** How deep `collectTensors` looks into a returned value. */
const MAX_RETURN_DEPTH = 32;

/**
 * Collects the tensors inside a returned value (a tensor, or arrays, plain objects, Maps and
 * Sets of them). Deeper than MAX_RETURN_DEPTH it throws: a tensor it missed would be disposed
 * and handed back dead.
 */
export function collectTensors(value: unknown, out: Set<Disposable>, depth = 0): void {
  if (value === null || typeof value !== "object") return;
  if ("dispose" in value && "id" in value && "isDisposed" in value) {
    out.add(value as Disposable);
    return;
  }
  if (depth >= MAX_RETURN_DEPTH) {
    throw new Error(
      `tidy: the returned value nests deeper than ${MAX_RETURN_DEPTH} levels; return its tensors nearer the top`,
    );
  }
  const items = Array.isArray(value) || value instanceof Set
    ? value
    : value instanceof Map
    ? value.values()
    : Object.values(value);
  for (const v of items) collectTensors(v, out, depth + 1);
}

/** Runs `fn`, then disposes the tensors it created that it does not return. */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  const returned = new Set<Disposable>();
  try {
    result = fn();
    if (result instanceof Promise) {
      throw new Error("tidy(fn): fn must be synchronous; await outside the scope");
    }
    collectTensors(result, returned);
  } catch (e) {
    for (const t of scope) if (!t.isDisposed) t.dispose();
    throw e;
  } finally {
    scopes.pop();
  }
  for (const t of scope) {
    if (returned.has(t)) scopes[scopes.length - 1]?.add(t);
    else if (!t.isDisposed) t.dispose();
  }
  return result;
}

/** Number of open scopes (for tests). */
export function scopeDepth(): number {
  return scopes.length;
}
