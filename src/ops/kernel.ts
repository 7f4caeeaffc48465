/**
 * How ops run kernels: allocate outputs (poisoned with NaN in tests), bind tensors and
 * parameter blocks in binding order, and record a dispatch on the batched encoder.
 */
import { WORKGROUP_1D } from "../../shaders/common.ts";
import { fillShader } from "../../shaders/fill.ts";
import type { Binding } from "../device/gpu.ts";
import { currentGpu } from "../device/runtime.ts";
import { params } from "../device/uniforms.ts";
import type { DType } from "../tensor/dtype.ts";
import { type Shape, ShapeError } from "../tensor/shape.ts";
import { Tensor } from "../tensor/tensor.ts";

export { params } from "../device/uniforms.ts";
export type { Params } from "../device/uniforms.ts";

/** Quiet NaN: poison for outputs, so elements a kernel forgets to write fail the tests. */
export const NAN_BITS = 0x7fc00000;

export type KernelBinding = Tensor | Binding;

/**
 * Mesa's llvmpipe (the CPU adapter behind lavapipe and GL llvmpipe) ends every loop of an
 * invocation after 65,535 iterations in total (gallivm's guard against endless loops) and the
 * kernel returns wrong numbers without any error. Kernels that loop over a user-sized dimension
 * keep each invocation's loop at most this long on CPU adapters (half the limit leaves room for
 * the kernel's other loops), by splitting the work or by refusing with a clear error.
 */
export const CPU_ADAPTER_MAX_LOOP = 32768;

/** Throws naming the op when a per-invocation loop of `length` would break on a CPU adapter. */
export function checkLoopLength(op: string, length: number, what: string): void {
  if (length > CPU_ADAPTER_MAX_LOOP && currentGpu().adapterClass === "cpu") {
    throw new ShapeError(
      op,
      `${what} has ${length} elements; on CPU adapters (llvmpipe) this kernel supports up to ${CPU_ADAPTER_MAX_LOOP}`,
    );
  }
}

/** Records one dispatch. Tensors bind with their exact byte size. */
export function launch(
  op: string,
  source: string,
  bindings: KernelBinding[],
  workgroups: readonly number[],
  entryPoint = "main",
): void {
  const gpu = currentGpu();
  const resolved = bindings.map((b) => b instanceof Tensor ? b.binding : b);
  gpu.dispatch(op, source, resolved, workgroups, entryPoint);
}

/**
 * `tensors` copied into operand textures (src/device/operand_textures.ts; vec4 texels where
 * `vec4[i]`), for a kernel that reads them all with `textureLoad`: all of them, or undefined when
 * the tunable `textureOperands` is off or one does not fit a texture (the kernel then reads the
 * buffers). Ops use `withOperandTextures`, which gives them back; a caller of this gives each
 * back with `gpu.releaseOperandTexture` after recording the dispatches that read it.
 */
export function operandTextures(tensors: Tensor[], vec4: boolean[]): GPUTexture[] | undefined {
  const gpu = currentGpu();
  if (!gpu.tunables.textureOperands) return undefined;
  // All or none: check every operand fits before recording any copy.
  if (!tensors.every((t, i) => gpu.operandTextureFits(t.size * 4, vec4[i]))) return undefined;
  return tensors.map((t, i) => gpu.operandTexture(t.binding.buffer, t.size * 4, vec4[i])!);
}

function releaseOperandTextures(textures: GPUTexture[] | undefined): void {
  for (const t of textures ?? []) currentGpu().releaseOperandTexture(t);
}

/**
 * Runs `record` with the bindings of `tensors`: their operand textures when `enabled` and they
 * all fit (see operandTextures; `textured` is then true), else the tensors themselves. The
 * textures go back to their pool once `record` has recorded the dispatches that read them,
 * also when it throws.
 */
export function withOperandTextures<T>(
  enabled: boolean,
  tensors: Tensor[],
  vec4: boolean[],
  record: (operands: KernelBinding[], textured: boolean) => T,
): T {
  const textures = enabled ? operandTextures(tensors, vec4) : undefined;
  try {
    return record(textures ?? tensors, textures !== undefined);
  } finally {
    releaseOperandTextures(textures);
  }
}

/**
 * Outputs from which an op on a CPU adapter reads its operands through operand textures: below
 * it, the copies (and the compute pass they interrupt) are not worth it.
 */
export const TEXTURE_MIN_ELEMENTS = 16384;

/**
 * Whether a streaming op that writes `elements` values reads its inputs through operand textures
 * (src/device/operand_textures.ts): on CPU adapters only, where a texel fetch is a gather and a
 * storage load a loop over the SIMD lanes (on an AMD Zen 3 VM's lavapipe 0.8 against 12.8 ns per
 * vec4 per invocation: bench/load_costs.ts).
 */
export function texturesPay(elements: number): boolean {
  return currentGpu().adapterClass === "cpu" && elements >= TEXTURE_MIN_ELEMENTS;
}

/**
 * Runs `record` with one f32 operand read as scalars (r32float texels) through an operand texture
 * when `texturesPay(elements)`, else with the tensor itself: the one-input streaming kernels.
 */
export function withScalarOperand<T>(
  tensor: Tensor,
  elements: number,
  record: (operand: KernelBinding, textured: boolean) => T,
): T {
  return withOperandTextures(
    texturesPay(elements),
    [tensor],
    [false],
    ([operand], textured) => record(operand, textured),
  );
}

/** Workgroup grid for `n` invocations of a 1-D kernel (spills into y past 65,535 groups). */
export function grid1d(n: number, perGroup = WORKGROUP_1D): [number, number] {
  const groups = Math.ceil(n / perGroup);
  const max = currentGpu().limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [groups, 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y];
}

/** Fills a tensor's elements with one 32-bit pattern. */
export function fillBits(t: Tensor, bits: number, op = "fill"): void {
  if (t.size === 0) return;
  launch(op, fillShader, [t, params().u32(t.size, bits >>> 0)], grid1d(t.size));
}

/** Allocates an op's output; in poison mode it starts as NaN. */
export function output(op: string, shape: Shape, dtype: DType = "f32"): Tensor {
  const t = Tensor.empty(shape, dtype, op);
  if (currentGpu().poisonOutputs) fillBits(t, NAN_BITS, op + ".poison");
  return t;
}

/** Bit pattern of a number stored as the given dtype. */
export function bitsOf(value: number, dtype: DType): number {
  const buf = new ArrayBuffer(4);
  if (dtype === "f32") new Float32Array(buf)[0] = value;
  else if (dtype === "i32") new Int32Array(buf)[0] = value;
  else new Uint32Array(buf)[0] = value;
  return new Uint32Array(buf)[0];
}
