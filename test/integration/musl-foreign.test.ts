/**
 * Roots of other architectures whose only loader is musl's (an Alpine root for arm64 or armhf):
 * `--root` resolves their files by musl's rules, judged by that musl loader itself, run under
 * qemu-user (`ld-musl-<arch>.so.1 --list`). musl: Debian's `musl` packages for arm64 and armhf
 * (test/corpus/build-corpus.sh); the files: libraries of Debian's arm64 and armhf cross libc
 * packages, given names, dependencies and run paths by elfpatch. Where glibc's rules would answer
 * otherwise: the dependency of a dependency is found through the first library's `DT_RUNPATH`
 * (musl inherits it), a library on musl's path file only (`/etc/ld-musl-<arch>.path`), and
 * `libc.so.6`, which is musl itself. The loader's name comes from the file's header: `armhf` for
 * the hard-float ARM ABI.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Resolver } from "../../src/resolve/resolver.js";
import { corpusDir, crossPackageDir, crossPackageReady } from "../corpus/list.js";
import { makeTempDir } from "../support/fixtures.js";
import { muslListingOf, parseMuslList, sortedListing } from "../support/musl.js";
import { has } from "../support/oracle.js";
import { patchJson } from "../support/patch-cli.js";

const required = !!process.env.ELFPATCH_REQUIRE_CORPUS;

interface Case {
  debArch: string;
  pkg: string;
  triplet: string;
  musl: string;
  qemu: string;
}

const CASES: Case[] = [
  { debArch: "arm64", pkg: "libc6-arm64-cross", triplet: "aarch64-linux-gnu", musl: "aarch64", qemu: "qemu-aarch64" },
  { debArch: "armhf", pkg: "libc6-armhf-cross", triplet: "arm-linux-gnueabihf", musl: "armhf", qemu: "qemu-arm" },
];

describe("an Alpine-like root of another architecture: musl's rules, as its musl loader lists", () => {
  const T = makeTempDir("elfpatch-musl-foreign-");
  afterAll(() => fs.rmSync(T, { recursive: true, force: true }));

  for (const c of CASES) {
    const muslDir = path.join(corpusDir(), "musl", c.debArch);
    const ready = fs.existsSync(path.join(muslDir, ".extracted")) && crossPackageReady(c.pkg) && has(c.qemu);
    it.skipIf(!ready && !required)(`${c.debArch}: check --root resolves as ld-musl-${c.musl}.so.1 --list`, () => {
      expect(ready, `musl for ${c.debArch}, ${c.pkg} (test/corpus/build-corpus.sh) and ${c.qemu} are needed`).toBe(true);
      const R = path.join(T, c.debArch);
      const loader = `/lib/ld-musl-${c.musl}.so.1`;
      for (const d of ["lib", "etc", "opt/mylibs", "app/lib", "app/dep"]) fs.mkdirSync(path.join(R, d), { recursive: true });
      // musl's loader (its libc.so) at its ABI path, with a path file naming /opt/mylibs only.
      fs.copyFileSync(fs.realpathSync(path.join(muslDir, loader)), path.join(R, loader));
      fs.chmodSync(path.join(R, loader), 0o755);
      fs.writeFileSync(path.join(R, `etc/ld-musl-${c.musl}.path`), "/opt/mylibs\n");
      // Four libraries made from the cross package's libdl.so.2 (NEEDED libc.so.6).
      const libdl = path.join(crossPackageDir(c.pkg), "usr", c.triplet, "lib", "libdl.so.2");
      const make = (rel: string, args: string[]): void => {
        const f = path.join(R, rel);
        fs.copyFileSync(libdl, f);
        const run = patchJson([...args, f]);
        expect(run.summary, run.stderr).toMatchObject({ patched: 1, failed: 0 });
      };
      make("app/lib/libapp.so", ["--set-soname", "libapp.so", "--add-needed", "libdep.so.9", "--add-needed", "libsys.so.1",
        "--add-needed", "libmissing.so.1", "--set-rpath", "$ORIGIN/../dep"]);
      make("app/dep/libdep.so.9", ["--set-soname", "libdep.so.9", "--add-needed", "libdeep.so.2"]);
      make("app/dep/libdeep.so.2", ["--set-soname", "libdeep.so.2"]);
      make("opt/mylibs/libsys.so.1", ["--set-soname", "libsys.so.1"]);

      // The oracle: musl's loader under qemu, seeing the root as `/` (-L), called by its ABI path (-0).
      const r = spawnSync(c.qemu, ["-L", R, "-0", loader, path.join(R, loader), "--list", "/app/lib/libapp.so"], { encoding: "utf8" });
      const oracle = sortedListing(parseMuslList(r.stdout, r.stderr, loader));
      expect(oracle.found, r.stdout + r.stderr).toEqual(["libdeep.so.2 => /app/lib/../dep/libdeep.so.2", "libdep.so.9 => /app/lib/../dep/libdep.so.9", "libsys.so.1 => /opt/mylibs/libsys.so.1"]);
      expect(oracle.self).toEqual(["libc.so.6"]);

      const resolver = new Resolver({ root: R, mode: "list" });
      const report = resolver.resolve(path.join(R, "app/lib/libapp.so"));
      expect(sortedListing(muslListingOf(report, loader))).toEqual(oracle);
      // The report names musl's loader of that architecture, with the path file's system path.
      expect(resolver.loaders()).toMatchObject([{ path: loader, rules: "musl", glibc: null, defaultDirs: ["/opt/mylibs"], files: 1 }]);
    });
  }
});
