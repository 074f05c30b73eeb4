/**
 * Targets (src/resolve/candidates.ts, profile.ts): the kind of loader a file needs, read from its
 * ELF header, and that loader's ABI path. Checked on Debian's cross libc packages: for each one,
 * the loader `defaultInterpreter` names for the target of the package's `libc.so.6` must be the
 * loader file the package ships (its name, and its directory's last component: lib, lib32, lib64,
 * libx32), and a file of another kind must be refused by the candidate check.
 */
import { closeSync, existsSync, openSync, readdirSync, readSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { hostTarget, sameTarget, targetOf, verifyHeader, X86_64 } from "../../../src/resolve/candidates.js";
import { muslInterpreter } from "../../../src/resolve/musl.js";
import { defaultInterpreter } from "../../../src/resolve/profile.js";
import { CROSS_PACKAGES, crossPackageDir, crossPackageReady } from "../../corpus/list.js";

const required = !!process.env.ELFPATCH_REQUIRE_CORPUS;

function head(path: string): Buffer {
  const fd = openSync(path, "r");
  try {
    const b = Buffer.alloc(64);
    readSync(fd, b, 0, 64, 0);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** Every path under `dir` (files and symlinks). */
function walk(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

describe("targets", () => {
  it("the host's target is this machine's, and x86-64 files are of it here", () => {
    if (process.arch === "x64") expect(hostTarget()).toEqual(X86_64);
    expect(hostTarget("arm64")).toMatchObject({ elfClass: 2, data: 1, machine: 183 });
    expect(hostTarget("s390x")).toMatchObject({ elfClass: 2, data: 2, machine: 22 });
    const libc = "/lib/x86_64-linux-gnu/libc.so.6";
    if (existsSync(libc)) expect(sameTarget(targetOf(head(libc), 64)!, X86_64)).toBe(true);
    expect(targetOf(Buffer.from("not an ELF file at all, no magic here", "latin1"), 37)).toBeNull();
  });

  for (const pkg of CROSS_PACKAGES) {
    const ready = crossPackageReady(pkg);
    it.skipIf(!ready && !required)(`${pkg}: the loader named for its libc.so.6's target is the one it ships`, () => {
      expect(ready, `${pkg} is needed (test/corpus/build-corpus.sh)`).toBe(true);
      const files = walk(crossPackageDir(pkg));
      const libc = files.find((f) => basename(f) === "libc.so.6")!;
      expect(libc, "libc.so.6 in the package").toBeTruthy();
      const t = targetOf(head(libc), 64)!;
      expect(t).not.toBeNull();
      const interp = defaultInterpreter(t);
      expect(interp, `a loader path for machine ${t.machine}`).not.toBeNull();
      const loaders = files.filter((f) => basename(f) === basename(interp!));
      expect(loaders.length, `${basename(interp!)} in ${pkg}`).toBeGreaterThan(0);
      // Debian's amd64 multilib package keeps the i386 loader in lib32 (its ABI path is /lib).
      if (pkg !== "libc6-i386") expect(loaders.map((l) => basename(dirname(l)))).toContain(basename(dirname(interp!)));
      // The candidate check of that target accepts the file; x86-64's refuses it (other class or
      // machine, or the byte order; x32 is x86-64's machine in ELFCLASS32).
      expect(verifyHeader(head(libc), 64, t)).toBeNull();
      expect(verifyHeader(head(libc), 64, X86_64)).not.toBeNull();
    });
  }

  // musl's loader name for a target (its `LDSO_ARCH`): the names Debian's `musl` packages ship for
  // these architectures (read from the bookworm packages' file lists, 2026-12-04), against the
  // target of the same architecture's glibc `libc.so.6`.
  const MUSL_NAMES: [string, string][] = [
    ["libc6-i386", "ld-musl-i386.so.1"],
    ["libc6-armel-cross", "ld-musl-arm.so.1"],
    ["libc6-armhf-cross", "ld-musl-armhf.so.1"],
    ["libc6-arm64-cross", "ld-musl-aarch64.so.1"],
    ["libc6-mipsel-cross", "ld-musl-mipsel.so.1"],
    ["libc6-mips64el-cross", "ld-musl-mips64el.so.1"],
    ["libc6-s390x-cross", "ld-musl-s390x.so.1"],
  ];
  it("musl's loader path for each target, as Debian's musl packages name it", () => {
    expect(muslInterpreter(X86_64)).toBe("/lib/ld-musl-x86_64.so.1");
    for (const [pkg, name] of MUSL_NAMES) {
      if (!crossPackageReady(pkg) && !required) continue;
      const libc = walk(crossPackageDir(pkg)).find((f) => basename(f) === "libc.so.6")!;
      expect(muslInterpreter(targetOf(head(libc), 64)!), pkg).toBe(`/lib/${name}`);
    }
  });
});
