/**
 * The real-ELF corpus for test/integration/corpus.test.ts, as groups of file paths:
 * - `host`: every ELF regular file under /usr/lib/x86_64-linux-gnu (recursive, symlinks skipped);
 * - `cross-<pkg>`: ELF files unpacked by build-corpus.sh from other architectures' libc packages;
 * - `wheels`: ELF files under the Python site-packages directory (empty when there is none).
 * A file counts as ELF when its first 4 bytes are `\x7fELF` (so `.a` archives are left out).
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { i386Prefix } from "../support/i386.js";

/** The packages build-corpus.sh unpacks: test/corpus/packages.txt, which the script reads too. */
export const CROSS_PACKAGES: readonly string[] = readFileSync(fileURLToPath(new URL("./packages.txt", import.meta.url)), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"));

/** A cross package's glibc loader, for the tests that run it (natively or under qemu-user). */
export interface CrossLoader {
  pkg: string;
  /** The package's library directory, inside the package. */
  libDir: string;
  /** The loader file, inside the package. */
  loader: string;
  /** Its ABI path on a system of that architecture (the `PT_INTERP` of its programs). */
  abiPath: string;
  /** The qemu-user program that runs it; null: it runs natively here. */
  qemu: string | null;
}

const usrLib = (pkg: string, triplet: string, ld: string, abiPath: string, qemu: string, ldDir = "lib"): CrossLoader =>
  ({ pkg, libDir: `usr/${triplet}/lib`, loader: `usr/${triplet}/${ldDir}/${ld}`, abiPath, qemu });

/**
 * The loaders of the cross packages that run here. Not listed: sh4 (qemu-sh4 crashes in the
 * unpatched loader) and x32 (it needs a kernel with the x32 ABI).
 */
export const CROSS_LOADERS: readonly CrossLoader[] = [
  {
    pkg: "libc6-i386", libDir: "lib32", loader: "lib32/ld-linux.so.2", abiPath: "/lib/ld-linux.so.2",
    // Natively where the kernel runs i386 programs, else under qemu-i386 (test/support/i386.ts).
    get qemu(): string | null {
      return i386Prefix(join(crossPackageDir("libc6-i386"), "lib32/ld-linux.so.2"))?.[0] ?? null;
    },
  },
  usrLib("libc6-arm64-cross", "aarch64-linux-gnu", "ld-linux-aarch64.so.1", "/lib/ld-linux-aarch64.so.1", "qemu-aarch64"),
  usrLib("libc6-ppc64-cross", "powerpc64-linux-gnu", "ld64.so.1", "/lib64/ld64.so.1", "qemu-ppc64"),
  usrLib("libc6-s390x-cross", "s390x-linux-gnu", "ld64.so.1", "/lib/ld64.so.1", "qemu-s390x"),
  usrLib("libc6-powerpc-cross", "powerpc-linux-gnu", "ld.so.1", "/lib/ld.so.1", "qemu-ppc"),
  usrLib("libc6-mips-cross", "mips-linux-gnu", "ld.so.1", "/lib/ld.so.1", "qemu-mips"),
  usrLib("libc6-mipsel-cross", "mipsel-linux-gnu", "ld.so.1", "/lib/ld.so.1", "qemu-mipsel"),
  usrLib("libc6-mips64el-cross", "mips64el-linux-gnuabi64", "ld.so.1", "/lib64/ld.so.1", "qemu-mips64el", "lib64"),
  usrLib("libc6-mipsn32-cross", "mips64-linux-gnuabin32", "ld.so.1", "/lib32/ld.so.1", "qemu-mipsn32", "lib32"),
  usrLib("libc6-mips64r6el-cross", "mipsisa64r6el-linux-gnuabi64", "ld-linux-mipsn8.so.1", "/lib64/ld-linux-mipsn8.so.1", "qemu-mips64el", "lib64"),
  usrLib("libc6-riscv64-cross", "riscv64-linux-gnu", "ld-linux-riscv64-lp64d.so.1", "/lib/ld-linux-riscv64-lp64d.so.1", "qemu-riscv64"),
  // ARM's loaders keep their directory list right after code bytes, not after another string's NUL.
  usrLib("libc6-armhf-cross", "arm-linux-gnueabihf", "ld-linux-armhf.so.3", "/lib/ld-linux-armhf.so.3", "qemu-arm"),
  usrLib("libc6-armel-cross", "arm-linux-gnueabi", "ld-linux.so.3", "/lib/ld-linux.so.3", "qemu-arm"),
  usrLib("libc6-sparc64-cross", "sparc64-linux-gnu", "ld-linux.so.2", "/lib64/ld-linux.so.2", "qemu-sparc64", "lib64"),
  usrLib("libc6-hppa-cross", "hppa-linux-gnu", "ld.so.1", "/lib/ld.so.1", "qemu-hppa"),
  usrLib("libc6-m68k-cross", "m68k-linux-gnu", "ld.so.1", "/lib/ld.so.1", "qemu-m68k"),
];

/** The entry of `CROSS_LOADERS` for a package. */
export function crossLoader(pkg: string): CrossLoader {
  const l = CROSS_LOADERS.find((x) => x.pkg === pkg);
  if (!l) throw new Error(`no loader entry for ${pkg}`);
  return l;
}

export const HOST_LIB_DIR = "/usr/lib/x86_64-linux-gnu";

/** Debian releases build-corpus.sh installs with debootstrap: test/corpus/releases.txt. */
export const RELEASES: readonly string[] = readFileSync(fileURLToPath(new URL("./releases.txt", import.meta.url)), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"));

/** The root directory of an installed release. */
export function releaseRoot(suite: string): string {
  return join(corpusDir(), "roots", suite);
}

/** The zig compiler build-corpus.sh fetches (npm registry), or null when it is not there. */
export function zigCompiler(): string | null {
  const zig = join(corpusDir(), "tools", "zig", "zig");
  return existsSync(zig) ? zig : null;
}

/** Whether build-corpus.sh has fully installed this release (it writes the marker last). */
export function releaseReady(suite: string): boolean {
  return existsSync(join(releaseRoot(suite), ".installed"));
}

export const BUILD_SCRIPT = fileURLToPath(new URL("./build-corpus.sh", import.meta.url));

/** Where build-corpus.sh puts its output: `$ELFPATCH_CORPUS_DIR`, else `<repo>/.cache/corpus`. */
export function corpusDir(): string {
  return process.env.ELFPATCH_CORPUS_DIR || fileURLToPath(new URL("../../.cache/corpus", import.meta.url));
}

/** The directory one cross package was unpacked into. */
export function crossPackageDir(pkg: string): string {
  return join(corpusDir(), "cross", pkg);
}

/** Whether build-corpus.sh has fully unpacked this package (it writes the marker last). */
export function crossPackageReady(pkg: string): boolean {
  return existsSync(join(crossPackageDir(pkg), ".extracted"));
}

const MAGIC = [0x7f, 0x45, 0x4c, 0x46];

/** Whether the file starts with the ELF magic; reads 4 bytes only. Unreadable files are not ELF. */
export function isElf(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return false;
  }
  try {
    const buf = Buffer.alloc(4);
    const n = readSync(fd, buf, 0, 4, 0);
    return n === 4 && MAGIC.every((b, i) => buf[i] === b);
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}

/** Regular ELF files under `root`, recursively, sorted; symlinks (to files or dirs) are skipped. */
export function findElfFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && isElf(p)) out.push(p);
    }
  };
  walk(root);
  return out.sort();
}

/** The Python site-packages directory (`purelib`), or null when python3 is missing. */
export function pythonSitePackages(): string | null {
  try {
    const out = execFileSync(
      "python3",
      ["-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
      { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 30_000 },
    ).trim();
    return out !== "" && existsSync(out) ? out : null;
  } catch {
    return null;
  }
}

export interface CorpusGroup {
  name: string;
  files: string[];
}

/** All groups; a cross package not (yet) unpacked gives an empty group. */
export function listCorpus(): CorpusGroup[] {
  const groups: CorpusGroup[] = [{ name: "host", files: findElfFiles(HOST_LIB_DIR) }];
  for (const pkg of CROSS_PACKAGES) {
    groups.push({
      name: `cross-${pkg}`,
      files: crossPackageReady(pkg) ? findElfFiles(crossPackageDir(pkg)) : [],
    });
  }
  const site = pythonSitePackages();
  groups.push({ name: "wheels", files: site ? findElfFiles(site) : [] });
  return groups;
}

/**
 * Whether the default test run gives the corpus file `key` (a path relative to its group's root,
 * the same on every machine) its slow per-file checks (`readelf -W -a`, `eu-elflint`, dlopen): one
 * file in `share`, chosen by a hash of the key, so that another machine's larger library
 * directory does not stretch the run. `ELFPATCH_FULL_CORPUS=1` checks every file.
 */
export function inDefaultSample(key: string, share = 3): boolean {
  if (process.env.ELFPATCH_FULL_CORPUS === "1") return true;
  return createHash("sha256").update(key).digest().readUInt32LE(0) % share === 0;
}
