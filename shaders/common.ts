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
 * times per epoch with a handful of distinct specialisations: building a 30 KB conv source and
 * hashing it as a pipeline-cache key on every dispatch took a quarter of a ResNet-8 training
 * step's CPU time on lavapipe. Returning the same string object lets V8 reuse its cached hash.
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
