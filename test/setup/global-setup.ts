/**
 * Runs once before all test files: checks that the build exists (npm test runs `npm run build`
 * first through `pretest`; a bare `vitest` run gets a clear message instead of confusing failures).
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

export default function setup(): void {
  const wasm = fileURLToPath(new URL("../../build/wasm/core.release.wasm", import.meta.url));
  if (!existsSync(wasm)) {
    throw new Error("build/ is missing: run `npm run build` (or `npm test`, which builds first)");
  }
}
