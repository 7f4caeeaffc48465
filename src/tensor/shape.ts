/** Shape helpers and the error every op throws for bad shapes or arguments. */

export type Shape = readonly number[];

/** A shape or argument error that names the op, the shapes and what would fix it. */
export class ShapeError extends Error {
  constructor(op: string, message: string) {
    super(`${op}: ${message}`);
    this.name = "ShapeError";
  }
}

export function sizeOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function fmt(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function checkShape(op: string, shape: Shape): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new ShapeError(op, `invalid shape ${fmt(shape)}: dimensions must be integers >= 0`);
    }
  }
}

/** Row-major strides of a contiguous shape. */
export function stridesOf(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

/** Normalises a possibly negative axis; throws naming the op when out of range. */
export function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new ShapeError(op, `axis ${axis} is out of range for a tensor of rank ${rank}`);
  }
  return a;
}

/** NumPy broadcasting of two shapes; throws naming the op when they do not broadcast. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(
        op,
        `shapes ${fmt(a)} and ${fmt(b)} do not broadcast (dimension ${i}: ${da} vs ${db})`,
      );
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/**
 * A reshape's target shape with its -1 (at most one) inferred from `from`'s size; the error
 * names `op` and both shapes.
 */
export function resolveShape(op: string, from: Shape, shape: Shape): number[] {
  const size = sizeOf(from);
  const bad = shape.some((d) => !Number.isInteger(d) || d < -1);
  const inferred = shape.filter((d) => d === -1).length;
  if (bad || inferred > 1) {
    throw new ShapeError(op, `invalid target shape ${fmt(shape)}: integers >= 0 and at most one -1`);
  }
  const known = shape.reduce((n, d) => (d === -1 ? n : n * d), 1);
  const fill = inferred ? (known === 0 ? -1 : size / known) : 1;
  if ((inferred && !Number.isInteger(fill)) || fill < 0 || (!inferred && known !== size)) {
    throw new ShapeError(
      op,
      `cannot reshape ${fmt(from)} (${size} elements) into ${fmt(shape)}` +
        (inferred ? "" : ` (${known} elements)`),
    );
  }
  return shape.map((d) => (d === -1 ? fill : d));
}
