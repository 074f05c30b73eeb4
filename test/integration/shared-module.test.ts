/**
 * The core's Wasm module is compiled once per process, in the main thread: workers receive the
 * compiled module and every engine they create uses it, the resolver's too (`--shrink-rpath`
 * with `--force-rpath` resolves the load tree of each file with an engine of its own). Observed
 * from outside, with `strace -f`: a shard whose shrink makes the worker's resolver parse
 * libraries runs in a worker thread, and `core.release.wasm` is opened once, by the main thread.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../support/fixtures.js";

const HOST = "/usr/lib/x86_64-linux-gnu";
const LIBS = ["libz.so.1", "libdl.so.2", "libutil.so.1", "libm.so.6"];

/** strace is there and may trace (a container can forbid ptrace). */
const hasStrace = spawnSync("strace", ["-f", "-qq", "-e", "trace=none", "true"], { stdio: "ignore" }).status === 0;

describe.skipIf(!hasStrace || !existsSync(join(HOST, LIBS[0]!)))("one compiled core per process", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "elfpatch-module-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("a worker's shrink decisions use the module the main thread compiled", () => {
    for (const l of LIBS) copyFileSync(join(HOST, l), join(dir, l));
    const files = LIBS.map((l) => {
      const path = join(dir, l);
      const st = statSync(path);
      return { path, size: st.size, dev: st.dev, ino: st.ino, nlink: st.nlink, sig: "", ctimeMs: st.ctimeMs };
    });
    // An absolute entry that provides libc.so.6 and one that does not; as DT_RPATH the shrink is
    // transitive: the resolver parses what the entries provide (libc's own dependencies).
    const spec = { req: {}, rpath: { set: `${HOST}:/nonexistent-elfpatch-dir`, shrink: true, force: true }, dryRun: true };
    const script = `
      const { Pool } = await import(${JSON.stringify(pathToFileURL(join(repoRoot, "build/js/pool/pool.js")).href)});
      const pool = await Pool.create(1);
      try {
        const { records } = await pool.run(${JSON.stringify(files)}, ${JSON.stringify(spec)}, () => {});
        process.stdout.write(JSON.stringify(records.map((r) => [r.status, r.after?.rpath ?? r.error?.code ?? null])));
      } finally {
        await pool.close();
      }`;
    const trace = join(dir, "trace.txt");
    const out = execFileSync(
      "strace",
      ["-f", "-qq", "-e", "trace=openat", "-o", trace, process.execPath, "--input-type=module", "-e", script],
      { encoding: "utf8" },
    );
    const records = JSON.parse(out) as [string, string | null][];
    // The shrink ran: every library needs libc.so.6, which only the first entry provides.
    expect(records).toEqual(LIBS.map(() => ["would-patch", HOST]));

    const lines = readFileSync(trace, "utf8").split("\n");
    const pidOf = (line: string): number => Number(line.split(" ", 1)[0]);
    const wasmOpens = lines.filter((l) => /core\.release\.wasm"/.test(l) && !/ENOENT/.test(l));
    const libOpens = lines.filter((l) => l.includes(`"${dir}/`) && !l.includes("trace.txt"));
    const main = pidOf(lines[0]!); // the traced node process (its main thread)
    // The libraries were opened by a thread other than the main one (the worker)...
    const workerTids = new Set(libOpens.map(pidOf).filter((t) => t !== main));
    expect(workerTids.size).toBeGreaterThan(0);
    // ...and the system directory's libc was parsed there for the shrink...
    const probed = lines.filter((l) => l.includes(`"${HOST}/libc.so.6"`) && workerTids.has(pidOf(l)));
    expect(probed.length).toBeGreaterThan(0);
    // ...while the Wasm file was read once, by the main thread.
    expect(wasmOpens.map(pidOf)).toEqual([main]);
  });
});
