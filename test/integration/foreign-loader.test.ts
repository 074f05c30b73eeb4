/**
 * Growth on other classes, byte orders and machines, checked by real loaders: the libraries of
 * Debian's libc packages for i386 (run natively), arm64, ppc64 (big endian), s390x (big endian),
 * powerpc (32-bit big endian), MIPS (o32 both endians, n64, n32, release 6: `DT_MIPS_*` entries,
 * `DT_MIPS_RLD_MAP_REL` relative to its own place), riscv64, ARM hard and soft float, sparc64, hppa
 * and m68k (run under qemu-user) are grown with a long DT_RPATH (moved tables, new segments,
 * program header room), then each is listed by the package's own ld.so, which maps every segment:
 * output and exit status must be those of the unpatched copy. (sh4 and x32 are in the corpus but
 * not here: qemu-sh4 crashes in the unpatched loader, and x32 needs a kernel with the x32 ABI.)
 */
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isFileError, patchFile } from "../../src/index.js";
import { CROSS_LOADERS, crossPackageDir, inDefaultSample, type CrossLoader } from "../corpus/list.js";

const LONG = "/nix/var/nix/profiles/per-user/alice/profile/lib:/opt/a/rather/long/directory/that/cannot/fit/in/place";
/** More libraries (gconv modules) copied next to libc. */
const EXTRA: Record<string, string> = { "libc6-i386": "usr/lib32/gconv" };

const hasTool = (t: string): boolean => spawnSync("sh", ["-c", `command -v ${t}`]).status === 0;
const required = !!process.env.ELFPATCH_REQUIRE_CORPUS;

function list(t: CrossLoader, dir: string, file: string): { status: number | null; out: string } {
  const ldso = join(dir, basename(t.loader));
  const [cmd, args] = t.qemu ? [t.qemu, [ldso]] : [ldso, []];
  const r = spawnSync(cmd, [...args, "--library-path", dir, "--list", file], { encoding: "utf8", timeout: 30_000 });
  // Addresses change from run to run; paths differ between the two copies.
  const out = (r.stdout + r.stderr).replace(/\(0x[0-9a-f]+\)/g, "(ADDR)").replaceAll(dir, "<dir>");
  return { status: r.status, out };
}

const tmp = mkdtempSync(join(tmpdir(), "elfpatch-foreign-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("growth under the target's own loader", () => {
  for (const t of CROSS_LOADERS) {
    const src = join(crossPackageDir(t.pkg), t.libDir);
    const ldso = join(crossPackageDir(t.pkg), t.loader);
    const ldName = basename(t.loader);
    const ready = existsSync(ldso) && (t.qemu === null || hasTool(t.qemu));
    it.skipIf(!ready && !required)(`${t.pkg}: every grown library lists exactly as before`, () => {
      expect(ready, `${t.pkg} and ${t.qemu ?? "its loader"} are needed (test/corpus/build-corpus.sh, qemu-user)`).toBe(true);
      const orig = join(tmp, t.pkg, "orig");
      const grown = join(tmp, t.pkg, "grown");
      for (const d of [orig, grown]) {
        cpSync(src, d, { recursive: true, verbatimSymlinks: true });
        const extra = EXTRA[t.pkg] ? join(crossPackageDir(t.pkg), EXTRA[t.pkg]!) : null;
        if (extra && existsSync(extra)) cpSync(extra, d, { recursive: true, verbatimSymlinks: true });
        if (dirname(t.loader) !== t.libDir) cpSync(ldso, join(d, ldName));
      }
      const all = readdirSync(grown).filter((n) => /\.so(\.\d|$)/.test(n) && n !== ldName);
      // i386's 250 gconv modules are much alike: a third of a long list by default (under
      // qemu-i386, on a kernel without IA32 emulation, each listing costs ~40 ms).
      const names = all.length > 60 ? all.filter((n) => inDefaultSample(`${t.pkg}/${n}`)) : all;
      expect(names.length).toBeGreaterThan(10);
      const strategies = new Map<string, number>();
      const problems: string[] = [];
      // Libraries the unpatched loader listed (a loader that cannot run here fails both times alike).
      let listed = 0;
      for (const n of names) {
        const r = patchFile(join(grown, n), {}, { rpath: { force: true, add: [LONG] } });
        if (isFileError(r)) {
          problems.push(`${n}: ${r.error.code}`);
          continue;
        }
        strategies.set(r.strategy, (strategies.get(r.strategy) ?? 0) + 1);
        const before = list(t, orig, join(orig, n));
        const after = list(t, grown, join(grown, n));
        if (before.status === 0) listed++;
        if (after.status !== before.status || after.out !== before.out) {
          problems.push(`${n} (${r.strategy}): exit ${before.status} -> ${after.status}\n${before.out}---\n${after.out}`);
        }
      }
      console.log(`${t.pkg}: ${names.length} of ${all.length} libraries, ${listed} listed; ${JSON.stringify(Object.fromEntries(strategies))}`);
      expect(problems).toEqual([]);
      expect(listed, `the unpatched loader listed too few libraries: ${list(t, orig, join(orig, names[0]!)).out}`).toBeGreaterThan(names.length / 2);
      expect((strategies.get("new-segment") ?? 0) + (strategies.get("slack") ?? 0)).toBeGreaterThan(5);
    });
  }
});
