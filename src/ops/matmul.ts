/**
 * Matrix products and linear layers, with their gradient rules.
 *
 * For C = op(A)·op(B), op = identity or transpose (read inside the kernel, never copied):
 *   dop(A) = dC·op(B)ᵀ   and   dop(B) = op(A)ᵀ·dC,
 * and when A itself was transposed, dA = (dop(A))ᵀ = op(B)·dCᵀ (likewise for B). Each of these
 * is one more matmul with the right transpose flags, so backward costs two forward-sized
 * products and no transposed copies.
 *
 * linear(x, W, b) = x·Wᵀ + b with W in PyTorch's [out, in] layout: a matmul with transposeB and
 * the bias added in the kernel's store. Its gradients: dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy.
 */
import {
  CPU_WORKGROUP,
  GPU_TILE,
  matmulShader,
  type MatmulSpec,
  matmulTile,
  type MatmulVariant,
  vectorised,
} from "../../shaders/matmul.ts";
import { needsGrad, noGrad, record } from "../autograd/tape.ts";
import { currentGpu } from "../device/runtime.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkFloat } from "./elementwise.ts";
import { CPU_ADAPTER_MAX_LOOP, launch, output, params, withOperandTextures } from "./kernel.ts";
import { sum } from "./reduce.ts";
import { add } from "./arithmetic.ts";
import { slice } from "./shape_ops.ts";

export type { MatmulVariant } from "../../shaders/matmul.ts";

export interface MatmulOptions {
  /** Use Aᵀ: `a` is stored [K, M]. */
  transposeA?: boolean;
  /** Use Bᵀ: `b` is stored [N, K]. */
  transposeB?: boolean;
  /** Force a kernel variant (default: `matmulTunables.variant`, else the adapter's class). */
  variant?: MatmulVariant;
}

export const matmulTunables = {
  /**
   * Kernel variant for every matmul that does not name one: "cpu" (register-blocked, no
   * workgroup memory; fastest on llvmpipe), "gpu" (workgroup-memory tiles), or null to follow
   * `currentGpu().adapterClass`.
   */
  variant: null as MatmulVariant | null,
  /**
   * "cpu" variant: products with M and N both at least this (and A not transposed) compute
   * CPU_BLOCK.large per invocation (shaders/matmul.ts): 1.15-1.25x at 512 and 1024 on lavapipe,
   * for a ~5 s compile per shader that small products would not pay back.
   */
  largeBlockMinSide: 512,
  /**
   * "cpu" variant: force the invocations per workgroup along the rows (1 to CPU_WORKGROUP.y), or
   * null to choose by the product's size (see cpuWorkgroupRows).
   */
  workgroupRows: null as number | null,
};

/**
 * Rows of a "cpu" workgroup: the most (up to CPU_WORKGROUP.y) that still give every CPU worker
 * a workgroup, since lavapipe runs a workgroup on one thread. Measured on a 2-core VM (4
 * workers), 8 rows against 1: 128x128x784 2.28-2.34 -> 1.51-1.83 ms, 128x10x784 3.43-5.26 ->
 * 2.69-2.78; but 1024³ 73-82 -> 96 ms and batch 8 of 196x196x288 10.2-10.9 -> 13.6-15.6, so
 * products with enough workgroups keep 8. This rule against 8 rows always (trees alternated):
 * 128x128x784 2.30 / 2.83 -> 1.72 / 1.62 ms, 128x10x784 3.84 / 4.18 -> 2.03 / 3.06, 64x10x64
 * 0.56 / 0.60 -> 0.44 / 0.38.
 */
function cpuWorkgroupRows(prob: Problem, block: Pick<MatmulSpec, "variant" | "largeBlock">): number {
  const forced = matmulTunables.workgroupRows;
  if (forced !== null) {
    if (!Number.isInteger(forced) || forced < 1 || forced > CPU_WORKGROUP.y) {
      throw new RangeError(
        `matmul: matmulTunables.workgroupRows must be an integer from 1 to ${CPU_WORKGROUP.y} (or null), got ${forced}`,
      );
    }
    return forced;
  }
  const workers = currentGpu().cpuWorkers;
  for (let rows = CPU_WORKGROUP.y; rows > 1; rows /= 2) {
    const tile = matmulTile({ ...block, workgroupRows: rows });
    if (prob.batch * Math.ceil(prob.M / tile.rows) * Math.ceil(prob.N / tile.cols) >= workers) return rows;
  }
  return 1;
}

function chooseVariant(variant?: MatmulVariant): MatmulVariant {
  return variant ?? matmulTunables.variant ?? currentGpu().adapterClass;
}

/** The problem a kernel launch solves: `batch` products op(A)[M, K] · op(B)[K, N]. */
interface Problem {
  batch: number;
  M: number;
  N: number;
  K: number;
  transposeA: boolean;
  transposeB: boolean;
  variant: MatmulVariant;
}

/**
 * On CPU adapters a product whose k loop would come near llvmpipe's loop limit (see
 * CPU_ADAPTER_MAX_LOOP) is split along K into launches of at most this many k values, summed in
 * order.
 */
export const CPU_ADAPTER_MAX_K = CPU_ADAPTER_MAX_LOOP;

/** C = Σ_chunks op(A)[:, chunk]·op(B)[chunk, :] (+ bias), for K too long for one launch. */
function runSplitK(
  op: string,
  a: Tensor,
  b: Tensor,
  bias: Tensor | null,
  prob: Problem,
  outShape: number[],
): Tensor {
  return noGrad(() => {
    const lead = prob.batch > 1 || a.rank === 3 ? [0] : [];
    const chunkOf = (t: Tensor, kAxisLast: boolean, k0: number, kc: number) => {
      const [r, c] = t.shape.slice(-2);
      return kAxisLast
        ? slice(t, [...lead, 0, k0], [...t.shape.slice(0, -2), r, kc])
        : slice(t, [...lead, k0, 0], [...t.shape.slice(0, -2), kc, c]);
    };
    let acc: Tensor | null = null;
    for (let k0 = 0; k0 < prob.K; k0 += CPU_ADAPTER_MAX_K) {
      const kc = Math.min(CPU_ADAPTER_MAX_K, prob.K - k0);
      const aChunk = chunkOf(a, !prob.transposeA, k0, kc), bChunk = chunkOf(b, prob.transposeB, k0, kc);
      const part = runMatmul(op, aChunk, bChunk, null, { ...prob, K: kc }, outShape);
      aChunk.dispose();
      bChunk.dispose();
      const next: Tensor = acc ? add(acc, part) : part;
      if (acc) {
        acc.dispose();
        part.dispose();
      }
      acc = next;
    }
    if (!bias) return acc!;
    const withBias = add(acc!, bias);
    acc!.dispose();
    return withBias;
  });
}

/** Records the matmul kernel for `prob`, writing C with shape `outShape` (batch·M·N elements). */
function runMatmul(
  op: string,
  a: Tensor,
  b: Tensor,
  bias: Tensor | null,
  prob: Problem,
  outShape: number[],
): Tensor {
  const { batch, M, N, K, variant } = prob;
  if (K > CPU_ADAPTER_MAX_K && currentGpu().adapterClass === "cpu") {
    return runSplitK(op, a, b, bias, prob, outShape);
  }
  // With K = 0 some operands are empty buffers, which cannot be bound as vec4 arrays; the
  // scalar kernel just writes the bias (or zeros).
  const aligned = (d: number) => K > 0 && d % 4 === 0;
  const spec: MatmulSpec = {
    variant,
    transposeA: prob.transposeA,
    transposeB: prob.transposeB,
    exact: false,
    m4: variant === "cpu" && aligned(M),
    n4: variant === "cpu" && aligned(N),
    k4: variant === "cpu" && aligned(K),
    bias: bias !== null,
    largeBlock: variant === "cpu" && !prob.transposeA &&
      Math.min(M, N) >= matmulTunables.largeBlockMinSide,
  };
  const vec = vectorised(spec);
  if (variant === "cpu") spec.workgroupRows = cpuWorkgroupRows(prob, spec);
  const tile = matmulTile(spec);
  spec.exact = M % tile.rows === 0 && N % tile.cols === 0 &&
    (variant === "cpu" || K % GPU_TILE.depth === 0);
  const c = output(op, outShape);
  if (c.size === 0) return c;
  const unit = (v: boolean) => (v ? 4 : 1);
  const p = params().u32(M, N, K, 0, (M * K) / unit(vec.a), (K * N) / unit(vec.b), (M * N) / unit(vec.c), 0);
  // The "cpu" kernel reads A and B through operand textures where it can.
  withOperandTextures(variant === "cpu", [a, b], [vec.a, vec.b], ([ta, tb], textures) => {
    spec.textures = textures;
    const bindings = bias ? [ta, tb, bias, c, p] : [ta, tb, c, p];
    launch(op, matmulShader(spec), bindings, [Math.ceil(N / tile.cols), Math.ceil(M / tile.rows), batch]);
  });
  return c;
}

const describeOperand = (name: string, t: Tensor, transposed: boolean) =>
  `${name} ${fmt(t.shape)}${transposed ? " (transposed)" : ""}`;

/** Checks ranks and inner dimensions; returns M, N, K of op(a)·op(b) over the last two axes. */
function matmulDims(op: string, a: Tensor, b: Tensor, rank: number, tA: boolean, tB: boolean) {
  checkFloat(op, a, b);
  if (a.rank !== rank || b.rank !== rank) {
    const want = rank === 2 ? "2-D matrices" : "3-D batches of matrices [batch, rows, cols]";
    throw new ShapeError(op, `expects ${want}, got a ${fmt(a.shape)} and b ${fmt(b.shape)}`);
  }
  const [ar, ac] = a.shape.slice(-2), [br, bc] = b.shape.slice(-2);
  const [M, Ka] = tA ? [ac, ar] : [ar, ac];
  const [Kb, N] = tB ? [bc, br] : [br, bc];
  if (Ka !== Kb) {
    throw new ShapeError(
      op,
      `inner dimensions differ: ${describeOperand("a", a, tA)} has ${Ka} columns but ` +
        `${describeOperand("b", b, tB)} has ${Kb} rows`,
    );
  }
  return { M, N, K: Ka };
}

/**
 * C = op(A)·op(B) for 2-D f32 tensors: [M, K]·[K, N] -> [M, N], with op(A) = Aᵀ when
 * `transposeA` (A stored [K, M]) and op(B) = Bᵀ when `transposeB` (B stored [N, K]).
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const tA = options.transposeA ?? false, tB = options.transposeB ?? false;
  const { M, N, K } = matmulDims("matmul", a, b, 2, tA, tB);
  const variant = chooseVariant(options.variant);
  const out = runMatmul(
    "matmul",
    a,
    b,
    null,
    { batch: 1, M, N, K, transposeA: tA, transposeB: tB, variant },
    [M, N],
  );
  const [needA, needB] = [needsGrad(a), needsGrad(b)];
  return record("matmul", [a, b], out, (dy) => {
    const mm = (x: Tensor, y: Tensor, transposeA: boolean, transposeB: boolean) =>
      matmul(x, y, { transposeA, transposeB, variant });
    return [
      // dA = dC·op(B)ᵀ, or for stored Aᵀ: op(B)·dCᵀ.
      !needA ? null : tA ? mm(b, dy, tB, true) : mm(dy, b, false, !tB),
      // dB = op(A)ᵀ·dC, or for stored Bᵀ: dCᵀ·op(A).
      !needB ? null : tB ? mm(dy, a, true, tA) : mm(a, dy, !tA, false),
    ];
  });
}

/**
 * Batched C[i] = op(A[i])·op(B[i]) for 3-D f32 tensors: [B, M, K]·[B, K, N] -> [B, M, N]
 * (same transpose options as `matmul`, applied to every matrix). The batch is the grid's z axis.
 */
export function batchMatmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const tA = options.transposeA ?? false, tB = options.transposeB ?? false;
  const { M, N, K } = matmulDims("batchMatmul", a, b, 3, tA, tB);
  if (a.shape[0] !== b.shape[0]) {
    throw new ShapeError(
      "batchMatmul",
      `batch sizes differ: a ${fmt(a.shape)} has ${a.shape[0]} matrices, b ${fmt(b.shape)} has ${b.shape[0]}`,
    );
  }
  const batch = a.shape[0];
  const max = currentGpu().limits.maxComputeWorkgroupsPerDimension;
  if (batch > max) {
    throw new ShapeError("batchMatmul", `batch ${batch} exceeds the ${max} matrices one dispatch can take`);
  }
  const variant = chooseVariant(options.variant);
  const prob = { batch, M, N, K, transposeA: tA, transposeB: tB, variant };
  const out = runMatmul("batchMatmul", a, b, null, prob, [batch, M, N]);
  const [needA, needB] = [needsGrad(a), needsGrad(b)];
  return record("batchMatmul", [a, b], out, (dy) => {
    const mm = (x: Tensor, y: Tensor, transposeA: boolean, transposeB: boolean) =>
      batchMatmul(x, y, { transposeA, transposeB, variant });
    return [
      !needA ? null : tA ? mm(b, dy, tB, true) : mm(dy, b, false, !tB),
      !needB ? null : tB ? mm(dy, a, true, tA) : mm(a, dy, !tA, false),
    ];
  });
}

export interface LinearOptions {
  variant?: MatmulVariant;
}

/**
 * A fully connected layer: y = x·Wᵀ + b, with x [..., in], W [out, in] (PyTorch layout) and
 * optional bias [out]; y is [..., out]. Leading axes of x are flattened into rows.
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, options: LinearOptions = {}): Tensor {
  const op = "linear";
  checkFloat(op, x, weight, ...(bias ? [bias] : []));
  if (x.rank < 1 || weight.rank !== 2) {
    throw new ShapeError(
      op,
      `expects x [..., in] and weight [out, in], got x ${fmt(x.shape)} and weight ${fmt(weight.shape)}`,
    );
  }
  const [outFeatures, inFeatures] = weight.shape;
  if (x.shape[x.rank - 1] !== inFeatures) {
    throw new ShapeError(
      op,
      `x ${fmt(x.shape)} has ${x.shape[x.rank - 1]} features but weight ${
        fmt(weight.shape)
      } expects ${inFeatures} ` +
        `(weight is [out, in])`,
    );
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outFeatures)) {
    throw new ShapeError(
      op,
      `bias ${fmt(bias.shape)} must be [${outFeatures}] to match weight ${fmt(weight.shape)}`,
    );
  }
  const rows = x.shape.slice(0, -1).reduce((n, d) => n * d, 1);
  const variant = chooseVariant(options.variant);
  const prob = {
    batch: 1,
    M: rows,
    N: outFeatures,
    K: inFeatures,
    transposeA: false,
    transposeB: true,
    variant,
  };
  // As a [rows, in] matrix: the product is one 2-D GEMM (and split-K slices 2-D operands).
  const x2 = x.rank === 2 ? x : x.alias([rows, inFeatures]);
  const out = runMatmul(op, x2, weight, bias ?? null, prob, [...x.shape.slice(0, -1), outFeatures]);
  if (x2 !== x) x2.dispose();
  const inputs = bias ? [x, weight, bias] : [x, weight];
  const [needX, needW, needB] = [needsGrad(x), needsGrad(weight), bias ? needsGrad(bias) : false];
  return record(op, inputs, out, (dy) => {
    const dy2 = dy.alias([rows, outFeatures]);
    const x2 = x.alias([rows, inFeatures]);
    let dx: Tensor | null = null;
    if (needX) {
      const dx2 = matmul(dy2, weight, { variant }); // [rows, out]·[out, in]
      dx = dx2.alias(x.shape);
      dx2.dispose();
    }
    const dW = needW ? matmul(dy2, x2, { transposeA: true, variant }) : null; // [out, rows]·[rows, in]
    const db = needB ? sum(dy2, { axes: 0 }) : null;
    dy2.dispose();
    x2.dispose();
    return bias ? [dx, dW, db] : [dx, dW];
  });
}
