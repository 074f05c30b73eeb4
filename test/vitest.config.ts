import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// One config, two kinds of test files:
// - test/unit/**: in-process, call the engine and the wasm core directly; milliseconds each.
// - test/integration/**: spawn real tools (gcc, readelf, eu-elflint, ld.so, the built CLI) on
//   real ELF files; slower, so they get a longer timeout.
// `npm test` runs `npm run build` and the type check first (pretest), so build/ is always current.
// The config lives in test/ (the top level keeps the project's fixed layout); paths are relative
// to the package root.
export default defineConfig({
  root: fileURLToPath(new URL("..", import.meta.url)),
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 300_000,
    hookTimeout: 600_000,
    globalSetup: ["test/setup/global-setup.ts"],
    pool: "forks",
    // Vitest's default is one file at a time on two cores (cores - 1), but the slow files mostly
    // wait on the tools they spawn (gcc, ld.so, readelf, patchelf): two at a time took the suite
    // from 7.7 to 5.1 minutes on a 2-core VM (three: 4.8, with more risk of starving a kill test).
    maxWorkers: Math.max(2, availableParallelism() - 1),
    // The CLI keeps a result cache (by default under ~/.cache): tests keep theirs in a temp dir.
    env: { ELFPATCH_CACHE_DIR: join(tmpdir(), `elfpatch-test-cache-${process.pid}`) },
  },
});
