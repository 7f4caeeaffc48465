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
  /** Bindings a dispatch cannot write (see `readOnlyBindings`); it may write every other one. */
  readOnly: ReadonlySet<number>;
}

/**
 * The binding numbers a WGSL source declares read-only: `var<storage, read>` (or `var<storage>`,
 * read by default), `var<uniform>`, and handles (textures, samplers). Every other binding counts
 * as written, so a declaration this misreads errs on the safe side: an op's saved input counted
 * as changed, never a write missed (autograd's in-place check relies on it, backward.ts).
 */
export function readOnlyBindings(source: string): Set<number> {
  const readOnly = new Set<number>();
  const declaration = /((?:@\s*(?:group|binding)\s*\(\s*\d+\s*\)\s*)+)var\s*(?:<([^>]*)>)?\s*\w+\s*:/g;
  for (const [, attributes, space = ""] of source.matchAll(declaration)) {
    const binding = /@\s*binding\s*\(\s*(\d+)\s*\)/.exec(attributes);
    const words = space.split(",").map((w) => w.trim());
    const isReadOnly = space === "" ||
      (words.length === 1 && (words[0] === "uniform" || words[0] === "storage")) ||
      (words.length === 2 && words[0] === "storage" && words[1] === "read");
    if (binding && isReadOnly) readOnly.add(Number(binding[1]));
  }
  return readOnly;
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
      cached = { pipeline, layout: pipeline.getBindGroupLayout(0), readOnly: readOnlyBindings(source) };
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
