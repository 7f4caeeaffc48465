/** Suites' threat models from the command line (no GPU). */
import assert from "node:assert/strict";
import { getSuite, suiteThreats } from "../../src/attacks/registry.ts";

Deno.test("suiteThreats: the suite's budgets unless --eps; --norm alone keeps the suite's of that norm", () => {
  const fmnist = getSuite("fmnist"), basic = getSuite("basic");
  const given = (norm: "linf" | "l2", eps: number | null, normGiven: boolean) => ({
    norm,
    eps,
    normGiven,
    defaultEps: norm === "linf" ? 8 / 255 : 0.5,
  });
  assert.deepEqual(suiteThreats(fmnist, given("linf", null, false)), fmnist.threats);
  // It ran at l2 0.5 (the CLI default), not the suite's 2.0.
  assert.deepEqual(suiteThreats(fmnist, given("l2", null, true)), [{ norm: "l2", eps: 2 }]);
  assert.deepEqual(suiteThreats(fmnist, given("l2", 1, true)), [{ norm: "l2", eps: 1 }]);
  assert.deepEqual(suiteThreats(basic, given("l2", null, true)), [{ norm: "l2", eps: 0.5 }]);
  assert.deepEqual(suiteThreats(basic, given("linf", null, false)), [{ norm: "linf", eps: 8 / 255 }]);
});
