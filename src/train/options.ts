/**
 * Declarative options: one table per command gives each option's type, default and help, and
 * drives the command-line parser (node:util parseArgs), JSON config files and `--help`.
 * Precedence: defaults < --config file < command-line flags.
 */
import { parseArgs } from "node:util";

export type OptionType = "string" | "number" | "integer" | "boolean";

export interface OptionSpec {
  type: OptionType;
  default: string | number | boolean | null;
  help: string;
  choices?: readonly string[];
  /** Smallest allowed value for numbers. */
  min?: number;
  /** Largest allowed value for numbers. */
  max?: number;
}

export type OptionTable = Record<string, OptionSpec>;
export type OptionValues = Record<string, string | number | boolean | null>;

/** A user error in options or config: the CLI prints its message alone and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** `--batch-size` for `batchSize`. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
}

function coerce(
  key: string,
  spec: OptionSpec,
  raw: unknown,
  source: string,
): string | number | boolean | null {
  const where = source === "command line" ? `--${flagName(key)} (command line)` : `'${key}' in ${source}`;
  if (raw === null) {
    if (spec.default === null) return null;
    throw new UsageError(`${where}: a value is required`);
  }
  switch (spec.type) {
    case "boolean":
      if (typeof raw === "boolean") return raw;
      if (raw === "true" || raw === "false") return raw === "true";
      throw new UsageError(`${where}: expected true or false, got ${JSON.stringify(raw)}`);
    case "string": {
      const s = String(raw);
      if (spec.choices && !spec.choices.includes(s)) {
        throw new UsageError(`${where}: '${s}' is not one of ${spec.choices.join(", ")}`);
      }
      return s;
    }
    case "number":
    case "integer": {
      // Fractions like 8/255 are accepted, as attack budgets are usually written that way.
      const text = String(raw);
      const frac = /^\s*(-?[\d.eE+-]+)\s*\/\s*([\d.eE+-]+)\s*$/.exec(text);
      const n = frac ? Number(frac[1]) / Number(frac[2]) : Number(text);
      if (text.trim() === "" || !Number.isFinite(n)) {
        throw new UsageError(`${where}: '${text}' is not a number`);
      }
      if (spec.type === "integer" && !Number.isInteger(n)) {
        throw new UsageError(`${where}: '${text}' is not an integer`);
      }
      if (spec.min !== undefined && n < spec.min) {
        throw new UsageError(`${where}: ${n} is below the minimum ${spec.min}`);
      }
      if (spec.max !== undefined && n > spec.max) {
        throw new UsageError(`${where}: ${n} is above the maximum ${spec.max}`);
      }
      return n;
    }
  }
}

export interface ParsedCommand {
  values: OptionValues;
  /** Keys given explicitly on the command line. */
  explicit: Set<string>;
  /** The `--config` file, if one was given. */
  configFile: string | null;
  /** Keys the `--config` file set. */
  fromConfig: Set<string>;
  help: boolean;
  positionals: string[];
}

/** Parses argv against the table; `--config file.json` supplies values under the flags. */
export async function parseOptions(
  table: OptionTable,
  argv: string[],
  allowPositionals = false,
): Promise<ParsedCommand> {
  const options: Record<string, { type: "string" | "boolean" }> = {
    help: { type: "boolean" },
    config: { type: "string" },
  };
  for (const [key, spec] of Object.entries(table)) {
    options[flagName(key)] = { type: spec.type === "boolean" ? "boolean" : "string" };
    if (spec.type === "boolean") options[`no-${flagName(key)}`] = { type: "boolean" };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    const first = (e as Error).message.split("\n")[0].replace(/\.$/, "");
    // A negative number after a space reads as a flag: node's hint (the rest of its message) is
    // the fix, so say it in one line.
    const hint = /is ambiguous/.test(first) ? "; give a value that starts with '-' as --flag=VALUE" : "";
    throw new UsageError(`${first}${hint} (see --help)`);
  }
  const values: OptionValues = {};
  const fromConfig = new Set<string>();
  for (const [key, spec] of Object.entries(table)) values[key] = spec.default;
  const flags = parsed.values as Record<string, string | boolean | undefined>;
  if (typeof flags.config === "string") {
    let json: unknown;
    try {
      json = JSON.parse(await Deno.readTextFile(flags.config));
    } catch (e) {
      throw new UsageError(`--config ${flags.config}: ${(e as Error).message}`);
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new UsageError(`--config ${flags.config}: expected a JSON object of options`);
    }
    for (const [key, raw] of Object.entries(json)) {
      const spec = table[key];
      if (!spec) {
        throw new UsageError(
          `--config ${flags.config}: unknown option '${key}' (known: ${Object.keys(table).join(", ")})`,
        );
      }
      values[key] = coerce(key, spec, raw, flags.config);
      fromConfig.add(key);
    }
  }
  const explicit = new Set<string>();
  for (const [key, spec] of Object.entries(table)) {
    const flag = flagName(key);
    if (flags[flag] !== undefined) {
      values[key] = coerce(key, spec, flags[flag], "command line");
      explicit.add(key);
    }
    if (spec.type === "boolean" && flags[`no-${flag}`]) {
      values[key] = false;
      explicit.add(key);
    }
  }
  return {
    values,
    explicit,
    configFile: typeof flags.config === "string" ? flags.config : null,
    fromConfig,
    help: flags.help === true,
    positionals: parsed.positionals,
  };
}

/** `--seeds 0,1,2`: non-negative integers separated by commas (no empty items). */
export function parseSeeds(text: string): number[] {
  const parts = text.split(",").map((s) => s.trim());
  const seeds = parts.map(Number);
  if (parts.some((s) => !/^\d+$/.test(s)) || seeds.some((s) => !Number.isSafeInteger(s))) {
    throw new UsageError(`--seeds '${text}': expected non-negative integers separated by commas, e.g. 0,1,2`);
  }
  // A repeated seed repeats a run: its spread would count one result twice.
  const repeated = seeds.find((s, i) => seeds.indexOf(s) !== i);
  if (repeated !== undefined) throw new UsageError(`--seeds '${text}': seed ${repeated} is given twice`);
  return seeds;
}

/** The --help text: every option with its default. */
/**
 * The option table as help text. `unset` says what a null default means (e.g. "the profile's":
 * the value comes from elsewhere, not "none"); help that already names its default says none.
 */
export function helpText(usage: string, table: OptionTable, unset = "none"): string {
  const rows = Object.entries(table).map(([key, spec]) => {
    // Booleans also take --no-<flag> (to turn off what a profile or --config turned on).
    const flag = spec.type === "boolean"
      ? `--[no-]${flagName(key)}`
      : `--${flagName(key)} <${spec.choices ? spec.choices.join("|") : spec.type}>`;
    if (/\(default[:\s]|\(profile default\)/.test(spec.help)) return [flag, spec.help];
    const def = spec.default === null ? unset : JSON.stringify(spec.default);
    return [flag, `${spec.help} (default: ${def})`];
  });
  rows.push([
    "--config <file.json>",
    "read options from a JSON object (keys as in camelCase below the flags)",
  ]);
  rows.push(["--help", "print this help"]);
  const width = Math.min(44, Math.max(...rows.map(([f]) => f.length)) + 2);
  const cell = (f: string) => (f.length < width ? f.padEnd(width) : `${f}  `);
  return `${usage}\n\nOptions:\n` + rows.map(([f, h]) => `  ${cell(f)}${h}`).join("\n") + "\n";
}
