/**
 * File names that are not valid UTF-8. Node's string paths are UTF-8, so a name with other bytes
 * cannot be opened through the string node decodes it to (U+FFFD in place of those bytes): before
 * this was handled, such a name cost the batch a failed record, "lstat failed: ENOENT", whatever
 * the file was. Now the walk reads those names as bytes: an ELF file is a failed record whose
 * code (IO_PATH_ENCODING) and message say why, under its name with `\xNN` for the bad bytes;
 * anything else is ignored as under any other name; a directory with such a name is walked for
 * the ELF files below it; a valid name that contains U+FFFD itself is an ordinary file. Real
 * libraries, through `scan()` and through the CLI (exit code 1, every other file patched).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { displayName, scan } from "../../../src/scan/walk.js";
import { repoRoot } from "../../support/fixtures.js";

const LIBZ = "/usr/lib/x86_64-linux-gnu/libz.so.1";
const LIBM = "/usr/lib/x86_64-linux-gnu/libm.so.6";
const CLI = path.join(repoRoot, "build", "js", "cli", "main.js");

/** `dir/` followed by these raw bytes, as a Buffer path. */
const raw = (dir: string, ...bytes: (string | number)[]): Buffer =>
  Buffer.concat([Buffer.from(dir + path.sep), ...bytes.map((b) => (typeof b === "number" ? Buffer.from([b]) : Buffer.from(b)))]);

describe("file names that are not valid UTF-8", () => {
  let base: string;
  let tree: string;

  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-names-"));
    tree = path.join(base, "tree");
    fs.mkdirSync(tree);
    fs.copyFileSync(LIBZ, raw(tree, "bad", 0xff, ".so")); // ELF, bad name
    fs.writeFileSync(raw(tree, "notes", 0xe9, ".txt"), "not an ELF file\n"); // not ELF, bad name
    fs.mkdirSync(raw(tree, "dir", 0xfe)); // a directory with a bad name, an ELF file below it
    fs.copyFileSync(LIBM, Buffer.concat([raw(tree, "dir", 0xfe), Buffer.from("/libm.so.6")]));
    fs.copyFileSync(LIBZ, path.join(tree, "valid-\uFFFD.so")); // U+FFFD spelled in valid UTF-8
    fs.copyFileSync(LIBZ, path.join(tree, "plain.so"));
    fs.symlinkSync(Buffer.from([0x62, 0x61, 0x64, 0xff, 0x2e, 0x73, 0x6f]), raw(tree, "link", 0xff)); // a symlink with a bad name
  });
  afterAll(() => fs.rmSync(base, { recursive: true, force: true }));

  it("displayName keeps valid UTF-8 and writes other bytes as \\xNN", () => {
    expect(displayName(Buffer.from([0x61, 0xff, 0x62]))).toBe("a\\xffb");
    expect(displayName(Buffer.from("é€😀", "utf8"))).toBe("é€😀");
    // U+FFFD itself, validly encoded, next to a bad byte stays a character.
    expect(displayName(Buffer.from([0xff, 0xef, 0xbf, 0xbd]))).toBe("\\xff\uFFFD");
    // A truncated sequence, an overlong encoding, and an encoded surrogate are not valid UTF-8.
    expect(displayName(Buffer.from([0x41, 0xe2, 0x82]))).toBe("A\\xe2\\x82");
    expect(displayName(Buffer.from([0xc0, 0xaf]))).toBe("\\xc0\\xaf");
    expect(displayName(Buffer.from([0xed, 0xa0, 0x80]))).toBe("\\xed\\xa0\\x80");
  });

  it("scan: the ELF files with such names are errors that say why; the rest is as for any name", () => {
    const res = scan([tree], { sniff: true });
    expect(res.files.map((f) => path.relative(tree, f.path))).toEqual(["plain.so", "valid-\uFFFD.so"]);
    expect(res.errors.map((e) => [path.relative(tree, e.path), e.error.code]).sort()).toEqual([
      ["bad\\xff.so", "IO_PATH_ENCODING"],
      [path.join("dir\\xfe", "libm.so.6"), "IO_PATH_ENCODING"],
    ]);
    expect(res.errors[0]!.error.message).toMatch(/not valid UTF-8/);
    expect(res.skipped.filter((s) => s.reason === "not-elf").map((s) => path.relative(tree, s.path))).toEqual(["notes\\xe9.txt"]);
  });

  it("the CLI patches every other file, reports those two, exits 1, and leaves them untouched", () => {
    const work = path.join(base, "cli");
    // (node's own fs.cpSync stumbles on these names too)
    expect(spawnSync("cp", ["-a", tree, work]).status).toBe(0);
    const r = spawnSync(process.execPath, [CLI, "patch", "--add-rpath", "/opt/elfpatch-names", "--json", "--no-resolve", "--no-cache", "--no-progress", work], { encoding: "utf8" });
    expect(r.status).toBe(1);
    const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as { type: string; path: string; status: string; error?: { code: string } });
    const files = lines.filter((l) => l.type === "file").map((l) => [path.relative(work, l.path), l.status, l.error?.code ?? null]);
    expect(files).toEqual([
      ["bad\\xff.so", "failed", "IO_PATH_ENCODING"],
      [path.join("dir\\xfe", "libm.so.6"), "failed", "IO_PATH_ENCODING"],
      ["plain.so", "patched", null],
      ["valid-\uFFFD.so", "patched", null],
    ]);
    expect(lines.at(-1)).toMatchObject({ type: "summary", patched: 2, failed: 2, notElf: 1 });
    expect(fs.readFileSync(raw(work, "bad", 0xff, ".so")).equals(fs.readFileSync(LIBZ))).toBe(true);
    expect(fs.readFileSync(Buffer.concat([raw(work, "dir", 0xfe), Buffer.from("/libm.so.6")])).equals(fs.readFileSync(LIBM))).toBe(true);
    expect(fs.readFileSync(path.join(work, "plain.so")).equals(fs.readFileSync(LIBZ))).toBe(false);
  });
});
