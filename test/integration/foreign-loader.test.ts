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
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isFileError, patchFile } from "../../src/index.js";

const CROSS = join(process.cwd(), ".cache", "corpus", "cross");
const LONG = "/nix/var/nix/profiles/per-user/alice/profile/lib:/opt/a/rather/long/directory/that/cannot/fit/in/place";

interface Target {
  pkg: string;
  lib: string; // library dir inside the package
  ldso: string;
  qemu: string | null;
  /** The loader's directory when it is not `lib` (n64, n32 and sparc64 keep it in lib64/lib32). */
  ldDir?: string;
  extra?: string; // more libraries (gconv modules) copied next to libc
}

const TARGETS: Target[] = [
  { pkg: "libc6-i386", lib: "lib32", ldso: "ld-linux.so.2", qemu: null, extra: "usr/lib32/gconv" },
  { pkg: "libc6-arm64-cross", lib: "usr/aarch64-linux-gnu/lib", ldso: "ld-linux-aarch64.so.1", qemu: "qemu-aarch64" },
  { pkg: "libc6-ppc64-cross", lib: "usr/powerpc64-linux-gnu/lib", ldso: "ld64.so.1", qemu: "qemu-ppc64" },
  { pkg: "libc6-s390x-cross", lib: "usr/s390x-linux-gnu/lib", ldso: "ld64.so.1", qemu: "qemu-s390x" },
  { pkg: "libc6-powerpc-cross", lib: "usr/powerpc-linux-gnu/lib", ldso: "ld.so.1", qemu: "qemu-ppc" },
  { pkg: "libc6-mips-cross", lib: "usr/mips-linux-gnu/lib", ldso: "ld.so.1", qemu: "qemu-mips" },
  { pkg: "libc6-mipsel-cross", lib: "usr/mipsel-linux-gnu/lib", ldso: "ld.so.1", qemu: "qemu-mipsel" },
  {
    pkg: "libc6-mips64el-cross", lib: "usr/mips64el-linux-gnuabi64/lib", ldDir: "usr/mips64el-linux-gnuabi64/lib64",
    ldso: "ld.so.1", qemu: "qemu-mips64el",
  },
  {
    pkg: "libc6-mipsn32-cross", lib: "usr/mips64-linux-gnuabin32/lib", ldDir: "usr/mips64-linux-gnuabin32/lib32",
    ldso: "ld.so.1", qemu: "qemu-mipsn32",
  },
  {
    pkg: "libc6-mips64r6el-cross", lib: "usr/mipsisa64r6el-linux-gnuabi64/lib", ldDir: "usr/mipsisa64r6el-linux-gnuabi64/lib64",
    ldso: "ld-linux-mipsn8.so.1", qemu: "qemu-mips64el",
  },
  { pkg: "libc6-riscv64-cross", lib: "usr/riscv64-linux-gnu/lib", ldso: "ld-linux-riscv64-lp64d.so.1", qemu: "qemu-riscv64" },
  { pkg: "libc6-armhf-cross", lib: "usr/arm-linux-gnueabihf/lib", ldso: "ld-linux-armhf.so.3", qemu: "qemu-arm" },
  { pkg: "libc6-armel-cross", lib: "usr/arm-linux-gnueabi/lib", ldso: "ld-linux.so.3", qemu: "qemu-arm" },
  {
    pkg: "libc6-sparc64-cross", lib: "usr/sparc64-linux-gnu/lib", ldDir: "usr/sparc64-linux-gnu/lib64", ldso: "ld-linux.so.2",
    qemu: "qemu-sparc64",
  },
  { pkg: "libc6-hppa-cross", lib: "usr/hppa-linux-gnu/lib", ldso: "ld.so.1", qemu: "qemu-hppa" },
  { pkg: "libc6-m68k-cross", lib: "usr/m68k-linux-gnu/lib", ldso: "ld.so.1", qemu: "qemu-m68k" },
];

const hasTool = (t: string): boolean => spawnSync("sh", ["-c", `command -v ${t}`]).status === 0;
const required = !!process.env.ELFPATCH_REQUIRE_CORPUS;

function list(t: Target, dir: string, file: string): { status: number | null; out: string } {
  const ldso = join(dir, t.ldso);
  const [cmd, args] = t.qemu ? [t.qemu, [ldso]] : [ldso, []];
  const r = spawnSync(cmd, [...args, "--library-path", dir, "--list", file], { encoding: "utf8", timeout: 30_000 });
  // Addresses change from run to run; paths differ between the two copies.
  const out = (r.stdout + r.stderr).replace(/\(0x[0-9a-f]+\)/g, "(ADDR)").replaceAll(dir, "<dir>");
  return { status: r.status, out };
}

const tmp = mkdtempSync(join(tmpdir(), "elfpatch-foreign-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("growth under the target's own loader", () => {
  for (const t of TARGETS) {
    const src = join(CROSS, t.pkg, t.lib);
    const ldso = join(CROSS, t.pkg, t.ldDir ?? t.lib, t.ldso);
    const ready = existsSync(ldso) && (t.qemu === null || hasTool(t.qemu));
    it.skipIf(!ready && !required)(`${t.pkg}: every grown library lists exactly as before`, () => {
      expect(ready, `${t.pkg} and ${t.qemu ?? "its loader"} are needed (test/corpus/build-corpus.sh, qemu-user)`).toBe(true);
      const orig = join(tmp, t.pkg, "orig");
      const grown = join(tmp, t.pkg, "grown");
      for (const d of [orig, grown]) {
        cpSync(src, d, { recursive: true, verbatimSymlinks: true });
        const extra = t.extra ? join(CROSS, t.pkg, t.extra) : null;
        if (extra && existsSync(extra)) cpSync(extra, d, { recursive: true, verbatimSymlinks: true });
        if (t.ldDir) cpSync(ldso, join(d, t.ldso));
      }
      const names = readdirSync(grown).filter((n) => /\.so(\.\d|$)/.test(n) && n !== t.ldso);
      expect(names.length).toBeGreaterThan(10);
      const strategies = new Map<string, number>();
      const problems: string[] = [];
      for (const n of names) {
        const r = patchFile(join(grown, n), {}, { rpath: { force: true, add: [LONG] } });
        if (isFileError(r)) {
          problems.push(`${n}: ${r.error.code}`);
          continue;
        }
        strategies.set(r.strategy, (strategies.get(r.strategy) ?? 0) + 1);
        const before = list(t, orig, join(orig, n));
        const after = list(t, grown, join(grown, n));
        if (after.status !== before.status || after.out !== before.out) {
          problems.push(`${n} (${r.strategy}): exit ${before.status} -> ${after.status}\n${before.out}---\n${after.out}`);
        }
      }
      console.log(`${t.pkg}: ${names.length} libraries; ${JSON.stringify(Object.fromEntries(strategies))}`);
      expect(problems).toEqual([]);
      expect((strategies.get("new-segment") ?? 0) + (strategies.get("slack") ?? 0)).toBeGreaterThan(5);
    });
  }
});
