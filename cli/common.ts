/** What every command shares: clean one-line errors and exit codes (2: usage, 1: failure). */
import { UsageError } from "../src/train/options.ts";
import { NoAdapterError } from "../src/device/errors.ts";

export async function runCommand(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    const error = e as Error;
    if (error instanceof UsageError) {
      console.error(`error: ${error.message}`);
      Deno.exit(2);
    }
    console.error(`error: ${error.message}`);
    if (!(error instanceof NoAdapterError) && Deno.env.get("ATOP_DEBUG")) console.error(error.stack);
    Deno.exit(1);
  }
}
