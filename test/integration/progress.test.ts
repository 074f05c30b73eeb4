/**
 * The progress line appears on a terminal (files, MB, files/s, ETA) and never in pipes, under CI,
 * with --no-progress or with --json: stdout carries results only.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { has } from "../support/oracle.js";

const cli = join(process.cwd(), "build", "js", "cli", "main.js");

describe.skipIf(!has("script"))("progress line", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "elfpatch-progress-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const fresh = (): string => {
    const d = mkdtempSync(join(dir, "t-"));
    for (const l of ["libz.so.1", "libdl.so.2"]) copyFileSync(join("/usr/lib/x86_64-linux-gnu", l), join(d, l));
    return d;
  };
  const env = { ...process.env };
  delete env.CI;

  it("is drawn on a terminal", () => {
    // `script` gives the command a pseudo-terminal.
    const r = spawnSync("script", ["-q", "-c", `node ${cli} patch --add-rpath /x ${fresh()}`, "/dev/null"], { encoding: "utf8", env });
    expect(r.stdout).toMatch(/2\/2 files \| [\d.]+ MB \| \d+ files\/s \| ETA/);
  });

  it("is not drawn in a pipe, under CI, or with --no-progress", () => {
    const piped = spawnSync("node", [cli, "patch", "--add-rpath", "/x", fresh()], { encoding: "utf8", env });
    expect(piped.stderr).not.toMatch(/files\/s \| ETA/);
    const ci = spawnSync("script", ["-q", "-c", `node ${cli} patch --add-rpath /x ${fresh()}`, "/dev/null"], {
      encoding: "utf8", env: { ...env, CI: "true" },
    });
    expect(ci.stdout).not.toMatch(/ETA/);
    const off = spawnSync("script", ["-q", "-c", `node ${cli} patch --no-progress --add-rpath /x ${fresh()}`, "/dev/null"], { encoding: "utf8", env });
    expect(off.stdout).not.toMatch(/ETA/);
  });
});
