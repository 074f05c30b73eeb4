/**
 * `scan()` (src/scan/walk.ts) on real trees in a temp dir, with copies of real ELF files (system
 * libraries and /bin/true):
 * - ELF files are found by their magic, whatever their name and mode; text named `libfake.so`,
 *   files shorter than the magic, archives and Python files are `not-elf`;
 * - a symlink inside the batch is skipped (`symlink`, `of` its target); one leading outside is
 *   `symlink-outside`, or its target is scanned with `followSymlinks`;
 * - directory symlink loops (inside, to a parent, and outside when followed) end, every ELF file
 *   once (guarded by a child process with a timeout, so a hang fails instead of blocking vitest);
 * - hard links: one path handled, the other in-batch links listed in `links`, and skipped as
 *   `duplicate` with `of`;
 * - include/exclude globs (base name for patterns without `/`, else relative to the root);
 * - a root given as a file (or a symlink to one), and a missing root (an error record).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scan, type ScanResult, type SkippedFile } from "../../../src/scan/walk.js";

const LIB_DIR = "/usr/lib/x86_64-linux-gnu";
const LIBZ = path.join(LIB_DIR, "libz.so.1");
const LIBM = path.join(LIB_DIR, "libm.so.6");
const EXE = "/bin/true";
const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const BUILT_WALK = path.join(REPO, "build", "js", "scan", "walk.js");

let base: string;

beforeAll(() => {
  // realpath: records carry resolved paths; the temp dir itself may sit behind a symlink.
  base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-walk-")));
});

afterAll(() => {
  if (base) fs.rmSync(base, { recursive: true, force: true });
});

let counter = 0;
/** A fresh directory under the test's temp dir. */
function dir(name: string): string {
  const d = path.join(base, `${++counter}-${name}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

function put(file: string, src: string | Buffer, mode = 0o644): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (Buffer.isBuffer(src)) fs.writeFileSync(file, src);
  else fs.copyFileSync(src, file);
  fs.chmodSync(file, mode);
  return file;
}

const filePaths = (r: ScanResult): string[] => r.files.map((f) => f.path);
const skippedAs = (r: ScanResult, reason: SkippedFile["reason"]): string[] =>
  r.skipped.filter((s) => s.reason === reason).map((s) => s.path).sort();
const skippedEntry = (r: ScanResult, p: string): SkippedFile | undefined => r.skipped.find((s) => s.path === p);

describe("ELF by magic", () => {
  it("finds ELF files whatever their name or mode, and nothing else", () => {
    const root = dir("magic");
    const elf = [
      put(path.join(root, "noexec", "_ext.cpython-311-x86_64-linux-gnu.so"), LIBZ, 0o644),
      put(path.join(root, "libfoo.so.1.2.3"), LIBM, 0o755),
      put(path.join(root, "bin", "tool"), EXE, 0o755),
      put(path.join(root, "data", "blob.bin"), LIBZ, 0o600),
      put(path.join(root, "weird name with spaces.so"), LIBZ, 0o444),
    ];
    const notElf = [
      put(path.join(root, "libfake.so"), Buffer.from("this is a text file, not a library\n"), 0o755),
      put(path.join(root, "pkg", "__init__.py"), Buffer.from("import os\n")),
      put(path.join(root, "short.so"), Buffer.from([0x7f, 0x45, 0x4c])), // 3 bytes of the magic
      put(path.join(root, "empty.so"), Buffer.alloc(0)),
      put(path.join(root, "libstatic.a"), Buffer.from("!<arch>\n/               0           0     0     0       4         `\n\0\0\0\0")),
      put(path.join(root, "almost.so"), Buffer.from("\x7fELG" + "\0".repeat(60), "latin1")),
      put(path.join(root, "ldscript.so"), fs.readFileSync(LIBZ).subarray(1)), // magic one byte off
    ];
    const r = scan([root]);
    expect(r.errors).toEqual([]);
    expect(filePaths(r)).toEqual([...elf].sort());
    expect(skippedAs(r, "not-elf")).toEqual([...notElf].sort());
    for (const f of r.files) {
      const st = fs.statSync(f.path);
      expect(f).toMatchObject({ size: st.size, ino: st.ino, dev: st.dev, nlink: 1 });
      expect(f.links ?? []).toEqual([]);
    }
  });

  it("lists files in path order", () => {
    const root = dir("order");
    for (const n of ["z.so", "a.so", "m/b.so", "m/a.so", "B.so"]) put(path.join(root, n), LIBZ);
    const r = scan([root]);
    const got = filePaths(r);
    expect(got).toEqual([...got].sort());
    expect(got).toHaveLength(5);
  });
});

describe("symlinks", () => {
  it("skips a symlink inside the batch (its target is handled once), and names the target", () => {
    const root = dir("sym-in");
    const lib = put(path.join(root, "lib", "libz.so.1.2.13"), LIBZ);
    fs.symlinkSync("libz.so.1.2.13", path.join(root, "lib", "libz.so.1"));
    fs.mkdirSync(path.join(root, "other"));
    fs.symlinkSync("../lib/libz.so.1", path.join(root, "other", "libz.so"));
    const r = scan([root]);
    expect(r.errors).toEqual([]);
    expect(filePaths(r)).toEqual([lib]);
    expect(skippedEntry(r, path.join(root, "lib", "libz.so.1"))).toEqual({ path: path.join(root, "lib", "libz.so.1"), reason: "symlink", of: lib });
    expect(skippedEntry(r, path.join(root, "other", "libz.so"))).toEqual({ path: path.join(root, "other", "libz.so"), reason: "symlink", of: lib });
  });

  it("a symlink into another root of the same batch is inside the batch", () => {
    const a = dir("sym-roots-a");
    const b = dir("sym-roots-b");
    const lib = put(path.join(b, "libm.so.6"), LIBM);
    fs.symlinkSync(lib, path.join(a, "libm.so.6"));
    const r = scan([a, b]);
    expect(filePaths(r)).toEqual([lib]);
    expect(skippedEntry(r, path.join(a, "libm.so.6"))).toMatchObject({ reason: "symlink", of: lib });
  });

  it("does not patch through a symlink leading outside, unless followSymlinks", () => {
    const outside = dir("sym-outside-target");
    const target = put(path.join(outside, "libm.so.6"), LIBM);
    const targetDir = path.join(outside, "tree");
    const inTree = put(path.join(targetDir, "libz.so.1"), LIBZ);
    const root = dir("sym-outside");
    const own = put(path.join(root, "own.so"), LIBZ);
    fs.symlinkSync(target, path.join(root, "libm.so.6"));
    fs.symlinkSync(targetDir, path.join(root, "tree"));

    const r = scan([root]);
    expect(r.errors).toEqual([]);
    expect(filePaths(r)).toEqual([own]);
    expect(skippedAs(r, "symlink-outside")).toEqual([path.join(root, "libm.so.6"), path.join(root, "tree")]);

    const f = scan([root], { followSymlinks: true });
    expect(f.errors).toEqual([]);
    expect(filePaths(f)).toEqual([inTree, target, own].sort());
    expect(skippedAs(f, "symlink-outside")).toEqual([]);
  });

  it("directory symlink loops end, and each ELF file is found once", () => {
    const outer = dir("loops");
    const root = path.join(outer, "root");
    const lib = put(path.join(root, "a", "libz.so.1"), LIBZ);
    fs.symlinkSync(".", path.join(root, "self"));
    fs.symlinkSync("..", path.join(root, "a", "parent"));
    fs.symlinkSync("../a", path.join(root, "a", "again"));
    fs.mkdirSync(path.join(root, "b"));
    fs.symlinkSync("../a", path.join(root, "b", "toa"));
    fs.symlinkSync("../b", path.join(root, "a", "tob"));
    // Outside the root: a loop of its own, and a link back into the root.
    const out = path.join(outer, "out");
    const outLib = put(path.join(out, "x", "libm.so.6"), LIBM);
    fs.symlinkSync("../x", path.join(out, "x", "loop"));
    fs.symlinkSync("../y", path.join(out, "x", "toy"));
    fs.mkdirSync(path.join(out, "y"));
    fs.symlinkSync("../x", path.join(out, "y", "tox"));
    fs.symlinkSync(root, path.join(out, "y", "root"));
    fs.symlinkSync(out, path.join(root, "out"));
    fs.symlinkSync(outer, path.join(root, "up"));

    // First in a child process with a timeout: a hang must fail the test, not block it.
    const probe = `import(${JSON.stringify(BUILT_WALK)}).then((m) => { for (const follow of [false, true]) { const r = m.scan([${JSON.stringify(root)}], { followSymlinks: follow }); console.log(r.files.length); } })`;
    const child = spawnSync(process.execPath, ["--input-type=module", "-e", probe], { encoding: "utf8", timeout: 20_000 });
    expect(child.error, "scan hung on symlink loops").toBeUndefined();
    expect(child.status, child.stderr).toBe(0);

    const r = scan([root]);
    expect(r.errors).toEqual([]);
    expect(filePaths(r)).toEqual([lib]);
    expect(skippedAs(r, "symlink-outside")).toEqual([path.join(root, "out"), path.join(root, "up")]);
    const f = scan([root], { followSymlinks: true });
    expect(f.errors).toEqual([]);
    expect(filePaths(f)).toEqual([lib, outLib].sort());
    expect(new Set(f.files.map((x) => `${x.dev}:${x.ino}`)).size).toBe(f.files.length);
  }, 60_000);
});

describe("hard links", () => {
  it("handles one path of an inode and lists the other in-batch links", () => {
    const root = dir("hardlinks");
    const cache = dir("hardlinks-cache");
    const first = put(path.join(root, "a", "libz.so.1"), LIBZ);
    const second = path.join(root, "b", "libz.so.1");
    const third = path.join(root, "c", "copy.so");
    fs.mkdirSync(path.dirname(second), { recursive: true });
    fs.mkdirSync(path.dirname(third), { recursive: true });
    fs.linkSync(first, second);
    fs.linkSync(first, third);
    fs.linkSync(first, path.join(cache, "libz.so.1")); // outside the batch: not listed
    const single = put(path.join(root, "a", "libm.so.6"), LIBM);

    const r = scan([root]);
    expect(r.errors).toEqual([]);
    expect(filePaths(r)).toEqual([single, first].sort());
    const handled = r.files.find((f) => f.path === first)!;
    expect(handled.nlink).toBe(4);
    expect([...(handled.links ?? [])].sort()).toEqual([second, third].sort());
    expect(r.files.find((f) => f.path === single)!.links ?? []).toEqual([]);
    expect(skippedAs(r, "duplicate")).toEqual([second, third].sort());
    for (const p of [second, third]) expect(skippedEntry(r, p)!.of).toBe(first);
  });

  it("the same file given twice, or through two roots, is handled once and is not its own link", () => {
    const root = dir("twice");
    const lib = put(path.join(root, "sub", "libz.so.1"), LIBZ);
    for (const roots of [[root, lib], [lib, root], [root, root], [lib, lib], [root, path.join(root, "sub")], [path.join(root, "sub"), root]]) {
      const r = scan(roots);
      const what = roots.map((x) => path.relative(root, x) || ".").join(" ");
      expect(r.errors, what).toEqual([]);
      expect(filePaths(r), what).toEqual([lib]);
      // One path of one inode: nothing to relink, nothing to report as a duplicate of itself.
      expect(r.files[0]!.links ?? [], what).toEqual([]);
      expect(r.skipped, what).toEqual([]);
    }
  });
});

describe("include / exclude", () => {
  const build = (): { root: string; p: Record<string, string> } => {
    const root = dir("globs");
    const p = {
      ext: put(path.join(root, "site-packages", "pkg", "_ext.so"), LIBZ),
      dep: put(path.join(root, "site-packages", "pkg.libs", "libdep-1a2b.so.1"), LIBM),
      exe: put(path.join(root, "bin", "tool"), EXE, 0o755),
      hidden: put(path.join(root, ".hidden", "libh.so"), LIBZ),
    };
    return { root, p };
  };

  it("a pattern without / matches the base name, anywhere (dot directories too)", () => {
    const { root, p } = build();
    const r = scan([root], { include: ["*.so"] });
    expect(filePaths(r)).toEqual([p.hidden, p.ext].sort());
    expect(skippedAs(r, "excluded")).toEqual([p.exe, p.dep].sort());
  });

  it("a pattern with / matches the path relative to the root", () => {
    const { root, p } = build();
    expect(filePaths(scan([root], { include: ["site-packages/**"] }))).toEqual([p.ext, p.dep].sort());
    expect(filePaths(scan([root], { include: ["pkg/*.so"] }))).toEqual([]); // relative to the root, not anywhere
    expect(filePaths(scan([root], { include: ["site-packages/*.libs/*.so*"] }))).toEqual([p.dep]);
  });

  it("exclude wins over include, and several patterns add up", () => {
    const { root, p } = build();
    expect(filePaths(scan([root], { include: ["*.so", "*.so.*"], exclude: ["_ext.so"] }))).toEqual([p.hidden, p.dep].sort());
    expect(filePaths(scan([root], { exclude: ["bin/**", ".hidden/**"] }))).toEqual([p.ext, p.dep].sort());
    const r = scan([root], { exclude: ["*"] });
    expect(filePaths(r)).toEqual([]);
    expect(skippedAs(r, "excluded")).toHaveLength(4);
  });
});

describe("roots", () => {
  it("a root given as a file is scanned alone, and globs see its base name", () => {
    const d = dir("file-root");
    const lib = put(path.join(d, "libz.so.1"), LIBZ);
    put(path.join(d, "other.so"), LIBM);
    expect(filePaths(scan([lib]))).toEqual([lib]);
    expect(filePaths(scan([lib], { include: ["libz.*"] }))).toEqual([lib]);
    expect(filePaths(scan([lib], { exclude: ["libz.*"] }))).toEqual([]);
    // A relative root works too.
    const rel = path.relative(process.cwd(), lib);
    expect(filePaths(scan([rel]))).toEqual([lib]);
  });

  it("a root that is a symlink to a file gets its target scanned", () => {
    const d = dir("symlink-root");
    const lib = put(path.join(d, "real", "libm.so.6"), LIBM);
    const link = path.join(d, "link.so");
    fs.symlinkSync(lib, link);
    const r = scan([link]);
    expect(r.errors).toEqual([]);
    expect(filePaths(r)).toEqual([lib]);
  });

  it("a text root is not ELF", () => {
    const d = dir("text-root");
    const txt = put(path.join(d, "libfake.so"), Buffer.from("INPUT(-lz)\n"));
    const r = scan([txt]);
    expect(r.files).toEqual([]);
    expect(r.errors).toEqual([]);
    expect(skippedAs(r, "not-elf")).toEqual([txt]);
  });

  it("a missing root gives an error record, and the other roots are still scanned", () => {
    const d = dir("missing-root");
    const lib = put(path.join(d, "libz.so.1"), LIBZ);
    const missing = path.join(d, "does-not-exist");
    const r = scan([missing, d]);
    expect(filePaths(r)).toEqual([lib]);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]!.path).toBe(missing);
    expect(r.errors[0]!.error.code).toMatch(/^IO_/);
    expect(r.errors[0]!.error.message).toContain("ENOENT");
  });
});
