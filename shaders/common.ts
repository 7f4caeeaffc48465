/** WGSL snippets shared by many kernels. */

/** Invocations per workgroup of the one-dimensional (elementwise) kernels. */
export const WORKGROUP_1D = 256;

/**
 * Flat element index for kernels dispatched on a 2-D grid of 1-D workgroups: WebGPU caps each
 * grid dimension at 65,535 workgroups, so large tensors spill into the y dimension.
 */
export const flatIndex = /* wgsl */ `
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * ${WORKGROUP_1D}u;
}`;

/**
 * Memoises a shader generator by its arguments (JSON). Kernels are dispatched thousands of
 * times per epoch with a handful of distinct specialisations, so a 30 KB conv source is built
 * once, not on every dispatch, and the same string object comes back, whose hash V8 keeps for
 * the pipeline-cache lookup. A switch that changes the source must be an argument: one read
 * inside the generator (an environment variable, a global) is seen only on the first call.
 */
export function memoizeShader<Args extends unknown[]>(
  generate: (...args: Args) => string,
): (...args: Args) => string {
  const sources = new Map<string, string>();
  return (...args: Args): string => {
    const key = JSON.stringify(args);
    let source = sources.get(key);
    if (source === undefined) {
      source = generate(...args);
      sources.set(key, source);
    }
    return source;
  };
}
