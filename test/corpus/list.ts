/**
 * The real-ELF corpus for test/integration/corpus.test.ts, as groups of file paths:
 * - `host`: every ELF regular file under /usr/lib/x86_64-linux-gnu (recursive, symlinks skipped);
 * - `cross-<pkg>`: ELF files unpacked by build-corpus.sh from other architectures' libc packages;
 * - `wheels`: ELF files under the Python site-packages directory (empty when there is none).
 * A file counts as ELF when its first 4 bytes are `\x7fELF` (so `.a` archives are left out).
 */
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The packages build-corpus.sh unpacks: test/corpus/packages.txt, which the script reads too. */
export const CROSS_PACKAGES: readonly string[] = readFileSync(fileURLToPath(new URL("./packages.txt", import.meta.url)), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"));

export const HOST_LIB_DIR = "/usr/lib/x86_64-linux-gnu";

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
