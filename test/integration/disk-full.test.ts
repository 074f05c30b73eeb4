/**
 * The default mode makes a shard's copies (several at once) before it renames any of them, so it
 * needs more free space at once than one copy at a time. On a disk with room for the originals
 * and two copies, a shard of all 72 files must still be patched: when copies hit ENOSPC, the
 * copies made so far are put in place (freeing their originals) and the others are made again
 * one by one. Nothing fails, no temp file is left, and each file is the version a roomy disk gives.
 * The same when the shard is written in groups (ShardWriter's held-edit limit): the copies of its
 * earlier groups, waiting for the shard's sync, are put in place too.
 *
 * Needs a small tmpfs (mount, so root with CAP_SYS_ADMIN); skipped where mounting is refused.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../support/fixtures.js";
import { CoreEngine } from "../../src/core/engine.js";
import { ShardWriter, type FileRecord } from "../../src/batch/process-file.js";
import { LibraryProbe } from "../../src/policy/rpath.js";

const CLI = path.join(repoRoot, "build", "js", "cli", "main.js");
const LIB = "/usr/lib/x86_64-linux-gnu/libz.so.1";
/** A shard of renamed copies holds at least 32 MB of files: these 72 (8 MB) are one shard. */
const FILES = 72;
const RPATH = "/opt/elfpatch-disk-full/a/run/path/long/enough/to/make/the/string/table/move/lib";

let work = "";
let mnt = "";
let mounted = false;

const pages = (n: number): number => Math.ceil(n / 4096);
const sha = (f: string): string => createHash("sha256").update(fs.readFileSync(f)).digest("hex");

function patch(dir: string) {
  const r = spawnSync(process.execPath, [CLI, "patch", "--json", "--no-resolve", "--no-cache", "--no-progress", "-j", "1", "--set-rpath", RPATH, dir], { encoding: "utf8" });
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as { type: string; path: string; status: string; error?: { code: string } });
  return { status: r.status, records: lines.filter((l) => l.type === "file"), stderr: r.stderr };
}

beforeAll(() => {
  if (process.getuid?.() !== 0 || !fs.existsSync(LIB)) return;
  work = fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-full-"));
  mnt = path.join(work, "mnt");
  fs.mkdirSync(mnt);
  const size = fs.statSync(LIB).size;
  // The originals, two grown copies, and a little slack.
  const bytes = (FILES * pages(size) + 2 * pages(size + 65536) + 2) * 4096;
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${bytes}`, "tmpfs", mnt], { stdio: "pipe" });
    mounted = true;
  } catch {
    mounted = false;
  }
});

afterAll(() => {
  if (mounted) spawnSync("umount", [mnt]);
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe("default mode on a nearly full disk", () => {
  it("puts the copies made so far in place when a copy hits ENOSPC, and patches every file", (ctx) => {
    if (!mounted) ctx.skip();
    // What a roomy disk gives, for comparison.
    const roomy = path.join(work, "roomy");
    fs.mkdirSync(roomy);
    fs.copyFileSync(LIB, path.join(roomy, "libz.so.1"));
    expect(patch(roomy).status).toBe(0);
    const want = sha(path.join(roomy, "libz.so.1"));

    const dir = path.join(mnt, "tree");
    fs.mkdirSync(dir);
    for (let i = 0; i < FILES; i++) fs.copyFileSync(LIB, path.join(dir, `libz${i}.so.1`));
    // The disk really cannot hold every copy at once.
    const free = fs.statfsSync(mnt).bavail * fs.statfsSync(mnt).bsize;
    expect(free).toBeLessThan(FILES * fs.statSync(LIB).size);

    const r = patch(dir);
    expect(r.status, r.stderr).toBe(0);
    expect(r.records).toHaveLength(FILES);
    for (const rec of r.records) expect(rec, rec.path).toMatchObject({ status: "patched" });
    expect(fs.readdirSync(dir).sort()).toEqual(Array.from({ length: FILES }, (_, i) => `libz${i}.so.1`).sort());
    for (let i = 0; i < FILES; i++) expect(sha(path.join(dir, `libz${i}.so.1`))).toBe(want);
  });

  it("a shard written in groups (one file each): the earlier groups' copies go in place too", async (ctx) => {
    if (!mounted) ctx.skip();
    fs.rmSync(path.join(mnt, "tree"), { recursive: true, force: true }); // (the disk holds one tree)
    const dir = path.join(mnt, "groups");
    fs.mkdirSync(dir);
    const files = Array.from({ length: FILES }, (_, i) => ({ path: path.join(dir, `libz${i}.so.1`) }));
    for (const f of files) fs.copyFileSync(LIB, f.path);
    // Each file its own group: the copies of the groups before the one that finds the disk full
    // wait for the shard's sync, and must be put in place with it (else it fails again).
    const writer = new ShardWriter(CoreEngine.create(), { req: { setRpath: RPATH, rpathTag: "runpath" } }, null, undefined, 1);
    let records: FileRecord[] = [];
    await writer.shard(files, new LibraryProbe(), () => {}, (r) => (records = r));
    await writer.finish();
    expect(records).toHaveLength(FILES);
    for (const rec of records) expect(rec, rec.path).toMatchObject({ status: "patched" });
    expect(fs.readdirSync(dir)).toHaveLength(FILES);
  });
});
