/**
 * `deno task eval --checkpoint <file>`: accuracy of a trained classifier on a dataset split.
 * Reads the model config from the checkpoint's metadata (our runs), or takes --model and
 * --dataset for weights exported from PyTorch (names as in src/models; `num_batches_tracked`
 * entries are ignored).
 */
import { loadDataset } from "../src/data/by_name.ts";
import { GpuDataset } from "../src/data/loader.ts";
import { initWebGpu } from "../src/device/runtime.ts";
import { loadIntoTensors } from "../src/io/checkpoint.ts";
import { markdownTable } from "../src/io/report.ts";
import { buildClassifier } from "../src/train/classifier.ts";

import { evaluateClassifier } from "../src/train/evaluate.ts";
import { helpText, type OptionTable, parseOptions, UsageError } from "../src/train/options.ts";

import { CHECKPOINT_OPTIONS, readCheckpointArgument, runCommand } from "./common.ts";

const OPTIONS = {
  checkpoint: { type: "string", default: null, help: "checkpoint file (.safetensors) to evaluate" },
  limit: {
    type: "integer",
    default: null,
    min: 1,
    help: "evaluate a class-balanced subset of this many images",
  },
  batchSize: { type: "integer", default: 500, min: 1, help: "evaluation batch size" },
  ...CHECKPOINT_OPTIONS,
  json: { type: "boolean", default: false, help: "print the result as JSON" },
} as const satisfies OptionTable;

await runCommand(async () => {
  const { values, explicit, fromConfig, help } = await parseOptions(OPTIONS, Deno.args);
  if (help) {
    console.log(helpText("usage: deno task eval --checkpoint <file.safetensors> [options]", OPTIONS));
    return;
  }
  if (!values.checkpoint) throw new UsageError("--checkpoint <file> is required (see --help)");
  const { config, weights } = await readCheckpointArgument(values, new Set([...explicit, ...fromConfig]));
  const gpu = await initWebGpu();
  const host = await loadDataset(config.dataset, values.split as "train" | "test", values.dataDir as string);
  const model = buildClassifier(config, host.shape, host.classes.length);
  loadIntoTensors(weights, model.stateDict());
  const data = GpuDataset.upload(host);
  const started = performance.now();
  const r = await evaluateClassifier(model, data, {
    batchSize: values.batchSize as number,
    limit: values.limit as number | null,
  });
  const seconds = (performance.now() - started) / 1000;
  const result = {
    checkpoint: values.checkpoint,
    model: config.model,
    dataset: config.dataset,
    split: values.split,
    images: r.count,
    accuracy: r.accuracy,
    loss: r.loss,
    seconds,
    adapter: gpu.adapterName,
  };
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(markdownTable(
      ["checkpoint", "model", "dataset", "split", "images", "accuracy %", "loss", "seconds"],
      [[
        String(values.checkpoint),
        config.model,
        config.dataset,
        String(values.split),
        r.count,
        (100 * r.accuracy).toFixed(2),
        r.loss.toFixed(4),
        seconds.toFixed(1),
      ]],
    ));
  }
  data.dispose();
  model.dispose();
});
