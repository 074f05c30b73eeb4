#!/usr/bin/env node
/** The `elfpatch` executable: runs the program, maps errors to exit codes (0 ok, 1 failures, 2 usage, 3 internal). */
import { setFlagsFromString } from "node:v8";
import { CommanderError } from "./commander.js";
import { createProgram, type CliIo } from "./program.js";

// The main thread only scans and aggregates plain records: a small young generation keeps the
// batch's peak RSS low (the file bytes live in the workers' Wasm memories, not here).
setFlagsFromString("--max-semi-space-size=1");

// A reader that stops early (`elfpatch check --json | head`) is not an error: stop quietly.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
}

const io: CliIo = {
  out: (line) => process.stdout.write(line + "\n"),
  err: (line) => process.stderr.write(line + "\n"),
  setExitCode: (code) => {
    process.exitCode = code;
  },
  usage: (message) => {
    process.stderr.write(`elfpatch: ${message}\n`);
    process.exitCode = 2;
  },
};

try {
  await createProgram(io).parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version exit 0; every other commander error is a usage error.
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else {
    process.stderr.write(`elfpatch: internal error: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 3;
  }
}
