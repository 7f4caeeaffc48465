/**
 * Compute pipelines cached by (entry point, shader source). Specialised shaders are generated
 * as distinct sources (sizes and flags baked in), so the source is the key. Lookups run on every
 * dispatch: the source string is used as the key directly (a concatenated key would be rebuilt
 * and rehashed, O(source length), each time), and each pipeline's bind-group layout is fetched
 * once.
 */
export interface CachedPipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  /** Bindings the shader declares `var<storage, read_write>`: the buffers a dispatch may write. */
  writes: ReadonlySet<number>;
}

/** The binding numbers of a WGSL source's `var<storage, read_write>` declarations. */
export function writableBindings(source: string): Set<number> {
  const writes = new Set<number>();
  for (const m of source.matchAll(/@binding\((\d+)\)\s*var\s*<\s*storage\s*,\s*read_write\s*>/g)) {
    writes.add(Number(m[1]));
  }
  return writes;
}

export class PipelineCache {
  #byEntryPoint = new Map<string, Map<string, CachedPipeline>>();
  compiled = 0;

  constructor(private device: GPUDevice) {}

  get(op: string, source: string, entryPoint = "main"): CachedPipeline {
    let bySource = this.#byEntryPoint.get(entryPoint);
    if (!bySource) {
      bySource = new Map();
      this.#byEntryPoint.set(entryPoint, bySource);
    }
    let cached = bySource.get(source);
    if (!cached) {
      // Labels travel into wgpu's validation messages, so a bad shader names its op.
      const module = this.device.createShaderModule({ code: source, label: op });
      const pipeline = this.device.createComputePipeline({
        label: op,
        layout: "auto",
        compute: { module, entryPoint },
      });
      cached = { pipeline, layout: pipeline.getBindGroupLayout(0), writes: writableBindings(source) };
      bySource.set(source, cached);
      this.compiled++;
    }
    return cached;
  }

  get size(): number {
    let total = 0;
    for (const bySource of this.#byEntryPoint.values()) total += bySource.size;
    return total;
  }
}
