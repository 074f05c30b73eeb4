/**
 * `check --root DIR`: a tree extracted with `dpkg -x` (Debian's own libc6 and zlib1g packages)
 * is resolved as its own system: its default directories, its loader, paths in the target's view;
 * nothing resolves to the host's files. Without --root the same file resolves on the host.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const cli = join(process.cwd(), "build", "js", "cli", "main.js");

function checkJson(args: string[]): { records: Record<string, unknown>[]; status: number | null } {
  const r = spawnSync("node", [cli, "check", "--json", ...args], { encoding: "utf8" });
  const records = r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  return { records, status: r.status };
}

describe("check --root on a dpkg -x tree", () => {
  let dir: string;
  let root: string;
  let ready = false;

  beforeAll(() => {
    dir = join(tmpdir(), `elfpatch-root-${process.pid}`);
    root = join(dir, "root");
    mkdirSync(dir, { recursive: true });
    const dl = spawnSync("apt-get", ["download", "libc6", "zlib1g"], { cwd: dir, encoding: "utf8" });
    const debs = readdirSync(dir).filter((f) => f.endsWith(".deb"));
    if (dl.status !== 0 || debs.length < 2) {
      if (process.env.ELFPATCH_REQUIRE_CORPUS) throw new Error(`apt-get download failed: ${dl.stderr}`);
      console.warn("apt-get download of libc6/zlib1g failed: --root test skipped");
      return;
    }
    for (const d of debs) execFileSync("dpkg", ["-x", join(dir, d), root]);
    ready = existsSync(join(root, "lib", "x86_64-linux-gnu", "libc.so.6"));
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("resolves every library of the tree inside the tree", (ctx) => {
    if (!ready) return ctx.skip();
    const { records, status } = checkJson(["--root", root, join(root, "lib", "x86_64-linux-gnu")]);
    expect(status).toBe(0);
    const files = records.filter((r) => r.type === "file");
    expect(files.length).toBeGreaterThan(10);
    for (const f of files) {
      expect(f.status, String(f.path)).toBe("ok");
      expect(String(f.path).startsWith("/lib/") || String(f.path).startsWith("/lib64/"), String(f.path)).toBe(true);
    }
    const libz = files.find((f) => String(f.path).startsWith("/lib/x86_64-linux-gnu/libz.so"))!;
    const needed = libz.needed as { name: string; path: string; via: string }[];
    expect(needed[0]).toMatchObject({ name: "libc.so.6", path: "/lib/x86_64-linux-gnu/libc.so.6", via: "default" });
  });

  it("resolves the same file on the host without --root", (ctx) => {
    if (!ready) return ctx.skip();
    const file = readdirSync(join(root, "lib", "x86_64-linux-gnu")).find((f) => /^libz\.so\.1\.\d/.test(f))!;
    const { records } = checkJson([join(root, "lib", "x86_64-linux-gnu", file)]);
    const rec = records.find((r) => r.type === "file")!;
    const needed = rec.needed as { name: string; via: string }[];
    expect(needed[0]).toMatchObject({ name: "libc.so.6", via: "cache" }); // the host's ld.so.cache
  });
});
