/**
 * The `elfpatch` command (package.json "bin": build/bin/elfpatch, a sh launcher for
 * build/js/cli/main.js): works through a symlink (as npm installs it in node_modules/.bin),
 * passes arguments and exit codes through, and drops NODE_EXTRA_CA_CERTS, which would make node
 * read a certificate bundle at every start (elfpatch makes no TLS connection); sets glibc's
 * malloc trim threshold unless the caller did; with --json, caps the main thread's young
 * generation.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../support/fixtures.js";

const LAUNCHER = join(repoRoot, "build", "bin", "elfpatch");
const MAIN = join(repoRoot, "build", "js", "cli", "main.js");
const VERSION = (JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string }).version;

describe("the elfpatch command", () => {
  let dir: string;
  let link: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "elfpatch-launcher-"));
    mkdirSync(join(dir, ".bin"));
    link = join(dir, ".bin", "elfpatch");
    symlinkSync(LAUNCHER, link);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("runs the CLI, also through a symlink elsewhere (npm's node_modules/.bin)", () => {
    for (const cmd of [LAUNCHER, link]) {
      const r = spawnSync(cmd, ["--version"], { encoding: "utf8" });
      expect(r.status).toBe(0);
      expect(r.stdout.trim()).toBe(VERSION);
    }
  });

  it("passes arguments (spaces included) and exit codes through", () => {
    const tree = join(dir, "a tree with spaces");
    mkdirSync(tree);
    copyFileSync("/usr/lib/x86_64-linux-gnu/libz.so.1", join(tree, "libz.so.1"));
    const r = spawnSync(link, ["patch", "--json", "--no-resolve", "--no-cache", "--set-rpath", "$ORIGIN/a b", tree], { encoding: "utf8" });
    expect(r.status).toBe(0);
    const rec = JSON.parse(r.stdout.split("\n")[0]!) as { path: string; status: string; after: { runpath: string } };
    expect(rec.path).toBe(join(tree, "libz.so.1"));
    expect(rec.status).toBe("patched");
    expect(rec.after.runpath).toBe("$ORIGIN/a b");
    expect(spawnSync(link, ["patch"], { encoding: "utf8" }).status).toBe(2); // usage error: no PATH
  });

  it("drops NODE_EXTRA_CA_CERTS (node itself reads it at start-up)", () => {
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, "no-such-bundle.pem") };
    // node warns about a bundle it cannot load: proof that it reads the variable at start-up...
    const direct = spawnSync("node", [MAIN, "--version"], { encoding: "utf8", env });
    expect(direct.stderr).toContain("extra certs");
    // ...which the launcher spares it.
    const launched = spawnSync(LAUNCHER, ["--version"], { encoding: "utf8", env });
    expect(launched.status).toBe(0);
    expect(launched.stderr).toBe("");
  });

  /** A copy of the launcher next to a main.js of this source; returns the launcher's path. */
  const fakeLauncher = (name: string, mainSource: string): string => {
    const fake = join(dir, name);
    mkdirSync(join(fake, "bin"), { recursive: true });
    mkdirSync(join(fake, "js", "cli"), { recursive: true });
    copyFileSync(LAUNCHER, join(fake, "bin", "elfpatch"));
    writeFileSync(join(fake, "js", "cli", "main.js"), mainSource);
    return join(fake, "bin", "elfpatch");
  };

  it("caps the young generation for --json (the after-patch resolution runs in the main thread), and only then", () => {
    // The launcher next to a main.js that shows node's options.
    const launcher = fakeLauncher("fake", "console.log(JSON.stringify([process.execArgv, process.argv.slice(2)]));\n");
    const run = (args: string[]) => JSON.parse(spawnSync(launcher, args, { encoding: "utf8" }).stdout) as [string[], string[]];
    expect(run(["patch", "--json", "x y"])).toEqual([["--max-semi-space-size=4"], ["patch", "--json", "x y"]]);
    expect(run(["patch", "x"])).toEqual([[], ["patch", "x"]]);
  });

  it("fixes glibc's malloc trim threshold, unless the caller set one", () => {
    const launcher = fakeLauncher("fake-env", "console.log(process.env.MALLOC_TRIM_THRESHOLD_ ?? '');\n");
    const run = (env: NodeJS.ProcessEnv) => spawnSync(launcher, ["patch"], { encoding: "utf8", env }).stdout.trim();
    const { MALLOC_TRIM_THRESHOLD_: _, ...clean } = process.env;
    expect(run(clean)).toBe("65536");
    expect(run({ ...clean, MALLOC_TRIM_THRESHOLD_: "1048576" })).toBe("1048576");
  });

  // node 20 starts its ES-module loader only for an ES module (or an import()): 25-30 ms of every
  // start on the bench machine, and each module then loads slower than through require. The build
  // is CommonJS (tsconfig.json, build/js/package.json); this fails if it goes back to ES modules,
  // in the main thread or in a worker.
  const LIB = ["/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1"].find((f) => existsSync(f));
  it.skipIf(LIB === undefined)("loads the CLI and its worker threads through require: node's ES-module loader never starts", () => {
    const tree = join(dir, "many");
    mkdirSync(tree);
    // 256 files or more: the batch starts its worker (EAGER_FILES in src/batch/run.ts).
    for (let i = 0; i < 300; i++) copyFileSync(LIB!, join(tree, `lib${i}.so`));
    const env = { ...process.env, NODE_DEBUG: "module,esm" };
    const r = spawnSync(LAUNCHER, ["patch", "-j2", "--no-cache", "--no-progress", "--set-rpath", "$ORIGIN", tree], { encoding: "utf8", env });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain("elfpatch: 300 patched");
    // node's module debug log names the worker module as the CommonJS loader loads it...
    expect(r.stderr).toMatch(/MODULE \d+: load "[^"]*build\/js\/pool\/worker\.js"/);
    // ...and the ES-module loader's log is empty.
    expect(r.stderr).not.toMatch(/^ESM \d+:/m);
    for (const args of [["--version"], ["show", LIB!]]) {
      const s = spawnSync(LAUNCHER, args, { encoding: "utf8", env });
      expect(s.status, s.stderr).toBe(0);
      expect(s.stderr).toMatch(/^MODULE \d+:/m);
      expect(s.stderr).not.toMatch(/^ESM \d+:/m);
    }
  });
});
