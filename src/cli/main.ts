#!/usr/bin/env node
/** The `elfpatch` executable: runs the program, maps errors to exit codes (0 ok, 1 failures, 2 usage, 3 internal). */
import { CommanderError } from "./commander.js";
import { createProgram, type CliIo } from "./program.js";

// A reader that stops early (`elfpatch check --json | head`) is not an error: stop quietly.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
}

// Standard output is written in blocks (a patch of a big tree prints thousands of lines: one
// write each would cost a system call per line); standard error line by line, after what
// standard output holds so far (both may be one terminal: the lines keep their order).
let pending = "";
const flush = (): void => {
  if (pending.length === 0) return;
  const text = pending;
  pending = "";
  process.stdout.write(text);
};
const io: CliIo = {
  out: (line) => {
    pending += line + "\n";
    if (pending.length >= 1 << 16) flush();
  },
  err: (line) => {
    flush();
    process.stderr.write(line + "\n");
  },
  setExitCode: (code) => {
    process.exitCode = code;
  },
  usage: (message) => {
    flush();
    process.stderr.write(`elfpatch: ${message}\n`);
    process.exitCode = 2;
  },
};

async function main(): Promise<void> {
  try {
    await createProgram(io).parseAsync(process.argv);
    flush();
  } catch (err) {
    flush();
    if (err instanceof CommanderError) {
      // --help and --version exit 0; every other commander error is a usage error.
      process.exitCode = err.exitCode === 0 ? 0 : 2;
    } else {
      process.stderr.write(`elfpatch: internal error: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 3;
    }
  }

  // Done: leave now rather than when V8's background jobs (compiles and GC tasks that no longer
  // matter) have drained, which costs a short run about 10 ms. Only once stdout and stderr have
  // taken everything (on Linux pipes, files and terminals are written synchronously; elsewhere the
  // natural exit flushes them).
  if (process.stdout.writableLength === 0 && process.stderr.writableLength === 0) process.exit();
}

void main();
