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
