/**
 * A program that is running cannot be opened for writing (ETXTBSY): `--in-place` gives a failed
 * record, writes nothing and leaves no journal; the default mode (a new file renamed over the old)
 * patches it, and the running process keeps its old inode.
 */
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const cli = join(process.cwd(), "build", "js", "cli", "main.js");
const dir = mkdtempSync(join(tmpdir(), "elfpatch-busy-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("a running program", () => {
  it("--in-place fails cleanly; the default mode patches it under the running process", async () => {
    const prog = join(dir, "sleep");
    copyFileSync("/bin/sleep", prog);
    const before = readFileSync(prog);
    const child = spawn(prog, ["5"]);
    await new Promise((r) => setTimeout(r, 200));
    try {
      const inPlace = spawnSync("node", [cli, "patch", "--json", "--in-place", "--set-rpath", "/opt/x", prog], { encoding: "utf8" });
      expect(inPlace.status).toBe(1);
      const rec = JSON.parse(inPlace.stdout.split("\n")[0]!);
      expect(rec.status).toBe("failed");
      expect(rec.error.message).toMatch(/ETXTBSY/);
      expect(readFileSync(prog).equals(before)).toBe(true);
      expect(readdirSync(dir).filter((n) => n.includes("elfpatch"))).toEqual([]);

      const renamed = spawnSync("node", [cli, "patch", "--json", "--set-rpath", "/opt/x", prog], { encoding: "utf8" });
      expect(renamed.status).toBe(0);
      expect(JSON.parse(renamed.stdout.split("\n")[0]!).after.runpath).toBe("/opt/x");
      expect(child.exitCode).toBeNull(); // still running, on the old inode
    } finally {
      child.kill();
    }
    expect(spawnSync(prog, ["0"]).status).toBe(0); // the patched program runs
  });
});
