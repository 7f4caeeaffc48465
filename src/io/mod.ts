/** Files: safetensors, atomic checkpoints, PNG images and charts, report writers. */
export {
  type DecodedSafetensors,
  decodeSafetensors,
  encodeSafetensors,
  frameworkDType,
  halfToFloat,
  type HostArray,
  type SafetensorsDType,
  safetensorsDType,
  type SafetensorsInput,
  type SafetensorsTensor,
  type WritableDType,
} from "./safetensors.ts";
export {
  type Checkpoint,
  type CheckpointContents,
  type HostTensor,
  loadCheckpoint,
  loadIntoTensors,
  type LoadOptions,
  type LoadResult,
  saveCheckpoint,
} from "./checkpoint.ts";
export { writeFileAtomic } from "./atomic.ts";
export { parseJson, toJson } from "./json.ts";
export {
  type ChartOptions,
  crc32,
  encodePng,
  type GridOptions,
  type Image,
  imageGrid,
  lineChart,
  type Series,
  writePng,
} from "./png.ts";
export { type Align, appendJsonLine, markdownTable, readJson, readJsonLines, writeJson } from "./report.ts";
export { pathExists } from "./paths.ts";
