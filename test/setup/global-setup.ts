/**
 * Runs once before all test files: checks that the build exists (npm test runs `npm run build`
 * first through `pretest`; a bare `vitest` run gets a clear message instead of confusing failures).
 */
import { existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export default function setup(): () => void {
  const wasm = fileURLToPath(new URL("../../build/wasm/core.release.wasm", import.meta.url));
  if (!existsSync(wasm)) {
    throw new Error("build/ is missing: run `npm run build` (or `npm test`, which builds first)");
  }
  // Teardown: the result cache the spawned CLIs kept (test/vitest.config.ts points them there).
  // (Same process, so the same pid as in the config.)
  return () => rmSync(join(tmpdir(), `elfpatch-test-cache-${process.pid}`), { recursive: true, force: true });
}
