/**
 * Extended attributes and the two write modes, as the README states them: `--in-place` keeps the
 * inode and so every attribute of the file (a `user.*` attribute here); the default mode makes a
 * new inode, which carries mode, owner and group but no extended attributes. Attributes are set
 * and read with Python's
 * `os.setxattr`/`os.listxattr` (Node has no xattr API); skipped where Python or the file system
 * cannot.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTempDir } from "../support/fixtures.js";
import { patchJson } from "../support/patch-cli.js";

const PY = "import os, sys\nop, p = sys.argv[1], sys.argv[2]\n" +
  "if op == 'set': os.setxattr(p, 'user.elfpatch-test', b'kept')\n" +
  "else: print(','.join(sorted(os.listxattr(p))))\n";

function xattr(op: "set" | "list", file: string): { ok: boolean; out: string } {
  const r = spawnSync("python3", ["-c", PY, op, file], { encoding: "utf8" });
  return { ok: r.status === 0, out: (r.stdout ?? "").trim() };
}

const SOURCE = "/usr/lib/x86_64-linux-gnu/libz.so.1";

describe("extended attributes", () => {
  let T = "";
  let ready = false;

  beforeAll(() => {
    T = makeTempDir("elfpatch-xattr-");
    const probe = path.join(T, "probe");
    fs.writeFileSync(probe, "x");
    ready = fs.existsSync(SOURCE) && xattr("set", probe).ok && xattr("list", probe).out === "user.elfpatch-test";
  });

  afterAll(() => {
    if (T) fs.rmSync(T, { recursive: true, force: true });
  });

  function patched(name: string, mode: string[]): { file: string; ino: [number, number] } {
    const file = path.join(T, name, "libz.so.1");
    fs.mkdirSync(path.dirname(file));
    fs.copyFileSync(SOURCE, file);
    expect(xattr("set", file).ok).toBe(true);
    const before = fs.statSync(file).ino;
    const run = patchJson([...mode, "--force-rpath", "--add-rpath", "/opt/elfpatch-xattr/lib", file]);
    expect(run.files[0], run.stderr).toMatchObject({ status: "patched" });
    return { file, ino: [before, fs.statSync(file).ino] };
  }

  it("--in-place: the same inode, its user attribute kept", (ctx) => {
    if (!ready) ctx.skip();
    const { file, ino } = patched("in-place", ["--in-place"]);
    expect(ino[1]).toBe(ino[0]);
    expect(xattr("list", file).out).toBe("user.elfpatch-test");
  });

  it("default mode: a new inode, without the original's extended attributes (the README's stated limit)", (ctx) => {
    if (!ready) ctx.skip();
    const { file, ino } = patched("default", []);
    expect(ino[1]).not.toBe(ino[0]);
    expect(xattr("list", file).out).toBe("");
  });
});
