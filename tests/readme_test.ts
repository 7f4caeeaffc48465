/** The README's "first program" must run as printed, and its loss must fall. */
import assert from "node:assert/strict";

Deno.test("README: the first program runs and its loss falls", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("## A first program"));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(code, "README has a ts block under 'A first program'");
  const program = code.replace('"./mod.ts"', JSON.stringify(new URL("../mod.ts", import.meta.url).href));
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(file, program);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", new URL("../deno.json", import.meta.url).pathname, file],
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const losses = stdout.trim().split("\n").map((l) => Number(l.split(" ")[1]));
  assert.equal(losses.length, 5, stdout);
  assert.ok(losses[4] < losses[0] / 2, `loss fell: ${losses.join(", ")}`);
});
