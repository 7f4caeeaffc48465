/**
 * Option parsing shared by the commands (src/train/options.ts): precedence defaults < --config <
 * flags, which keys each source set, and list options that must not turn bad items into values.
 */
import assert from "node:assert/strict";
import { isDatasetName } from "../../src/data/by_name.ts";
import { type OptionTable, parseOptions, parseSeeds, UsageError } from "../../src/train/options.ts";

const TABLE = {
  seed: { type: "integer", default: 0, help: "seed" },
  eps: { type: "number", default: null, help: "radius" },
  norm: { type: "string", default: "linf", choices: ["linf", "l2"], help: "norm" },
} as const satisfies OptionTable;

Deno.test("options: a --config file sets values under the flags, and says which keys it set", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/c.json`;
  await Deno.writeTextFile(file, JSON.stringify({ seed: 5, eps: "8/255" }));
  const fromFile = await parseOptions(TABLE, ["--config", file]);
  assert.deepEqual(fromFile.values, { seed: 5, eps: 8 / 255, norm: "linf" });
  assert.deepEqual([...fromFile.fromConfig].sort(), ["eps", "seed"]);
  assert.deepEqual([...fromFile.explicit], [], "nothing on the command line");
  assert.equal(fromFile.configFile, file);
  const flagWins = await parseOptions(TABLE, ["--config", file, "--seed", "7", "--norm", "l2"]);
  assert.deepEqual(flagWins.values, { seed: 7, eps: 8 / 255, norm: "l2" });
  assert.deepEqual([...flagWins.explicit].sort(), ["norm", "seed"]);
  const none = await parseOptions(TABLE, []);
  assert.equal(none.configFile, null);
  assert.equal(none.fromConfig.size, 0);
});

Deno.test("options: --seeds takes non-negative integers only, no empty items", () => {
  assert.deepEqual(parseSeeds("0, 1,2"), [0, 1, 2]);
  for (const bad of ["1,,2", "1,", ",1", "", "-1", "1.5", "a", "1e3"]) {
    assert.throws(() => parseSeeds(bad), UsageError, `'${bad}' is refused`);
  }
});

Deno.test("datasets: names are the table's own keys, not inherited properties", () => {
  assert.ok(isDatasetName("mnist"));
  for (const name of ["toString", "constructor", "__proto__", "hasOwnProperty"]) {
    assert.ok(!isDatasetName(name));
  }
});
