/** Errors raised by the device layer. Each names the adapter and, where known, the op. */

/** No WebGPU adapter could be found: the message says how to get one. */
export class NoAdapterError extends Error {
  constructor(detail = "") {
    super(
      "No WebGPU adapter found" + (detail ? ` (${detail})` : "") + ".\n" +
        "  - With a GPU: install or update its driver (Vulkan on Linux, Metal on macOS, D3D12 on Windows).\n" +
        "  - Without a GPU on Linux: `apt-get install mesa-vulkan-drivers` gives the lavapipe CPU adapter\n" +
        "    (or install Mesa's EGL and set DENO_WEBGPU_BACKEND=gl for llvmpipe).\n" +
        "  - Check that nothing sets DENO_WEBGPU_BACKEND to a backend this machine lacks.",
    );
    this.name = "NoAdapterError";
  }
}

/** The device was lost (driver reset, out of memory, or destroyed). */
export class DeviceLostError extends Error {
  constructor(adapter: string, reason: string, message: string, lastOp: string) {
    super(
      `WebGPU device on ${adapter} was lost (${reason}): ${message}. ` +
        `Last op dispatched: ${lastOp || "none"}. Tensors on that device are gone; ` +
        `re-create the device with initWebGpu() and resume from the last checkpoint.`,
    );
    this.name = "DeviceLostError";
  }
}

/** A validation or out-of-memory error reported by WebGPU. */
export class GpuError extends Error {
  constructor(adapter: string, kind: string, message: string, op: string) {
    super(`WebGPU ${kind} error on ${adapter} in op '${op || "unknown"}': ${message}`);
    this.name = "GpuError";
  }
}
