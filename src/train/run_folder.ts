/**
 * A run folder holds everything of one run: config.json, log.jsonl (one JSON object per
 * event), checkpoints/<stage>.safetensors, and the summary (JSON + Markdown).
 */
import { pathExists } from "../io/paths.ts";
import { appendJsonLine, readJson, writeJson } from "../io/report.ts";

export class RunFolder {
  constructor(readonly dir: string) {}

  static defaultName(prefix: string): string {
    const stamp = new Date().toISOString().replace(/[:T]/g, "-").slice(0, 19);
    return `runs/${prefix}-${stamp}`;
  }

  path(name: string): string {
    return `${this.dir}/${name}`;
  }

  get configPath(): string {
    return this.path("config.json");
  }

  get logPath(): string {
    return this.path("log.jsonl");
  }

  checkpointPath(stage: string): string {
    return this.path(`checkpoints/${stage}.safetensors`);
  }

  async create(): Promise<void> {
    await Deno.mkdir(this.path("checkpoints"), { recursive: true });
  }

  exists(name: string): Promise<boolean> {
    return pathExists(this.path(name));
  }

  log(event: Record<string, unknown>): Promise<void> {
    return appendJsonLine(this.logPath, { time: new Date().toISOString(), ...event });
  }

  writeJson(name: string, value: unknown): Promise<void> {
    return writeJson(this.path(name), value);
  }

  /** A JSON file of the folder; a missing or corrupt one is an error naming it. */
  readJson<T>(name: string): Promise<T> {
    return readJson<T>(this.path(name));
  }
}
