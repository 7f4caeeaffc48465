/**
 * Compute pipelines cached by (shader source, entry point). Specialised shaders are generated
 * as distinct sources (sizes and flags baked in by wgsl-preprocessor), so the source is the key.
 */
export class PipelineCache {
  #pipelines = new Map<string, GPUComputePipeline>();
  compiled = 0;

  constructor(private device: GPUDevice) {}

  get(op: string, source: string, entryPoint = "main"): GPUComputePipeline {
    const key = entryPoint + "\u0000" + source;
    let pipeline = this.#pipelines.get(key);
    if (!pipeline) {
      // Labels travel into wgpu's validation messages, so a bad shader names its op.
      const module = this.device.createShaderModule({ code: source, label: op });
      pipeline = this.device.createComputePipeline({
        label: op,
        layout: "auto",
        compute: { module, entryPoint },
      });
      this.#pipelines.set(key, pipeline);
      this.compiled++;
    }
    return pipeline;
  }

  get size(): number {
    return this.#pipelines.size;
  }
}
