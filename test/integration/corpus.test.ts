/**
 * Real-ELF corpus check: for every ELF file of every corpus group (see test/corpus/list.ts),
 * `inspectFile` must agree with GNU readelf on every field readelf shows.
 *
 * The cross-architecture groups come from test/corpus/build-corpus.sh; when they are missing they
 * are built in `beforeAll`. If that fails (offline), those groups are skipped with a warning,
 * unless ELFPATCH_REQUIRE_CORPUS=1 (as in CI), which turns the failure into a test failure.
 * Mismatches are collected per group and reported together (first 20, then a count); the full
 * list is also written to `<corpus dir>/mismatches-<group>.txt`.
 */
import { execFile } from "node:child_process";
import { availableParallelism } from "node:os";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { inspectFile } from "../../src/index.js";
import type { ElfInfo } from "../../src/core/types.js";
import {
  BUILD_SCRIPT,
  CROSS_PACKAGES,
  corpusDir,
  crossPackageReady,
  listCorpus,
} from "../corpus/list.js";
import { readelfInfo, type ReadelfInfo } from "../support/readelf.js";

const execFileAsync = promisify(execFile);
const REQUIRE_CORPUS = process.env.ELFPATCH_REQUIRE_CORPUS === "1";
const MIN_HOST_FILES = 500;
const MIN_CROSS_FILES = 5;
const SHOWN_MISMATCHES = 20;
const SHOWN_LINE_CHARS = 600;
const CONCURRENCY = Math.min(8, Math.max(4, availableParallelism() * 2));

let crossProblem: string | null = null;
let groups = new Map<string, string[]>();

beforeAll(async () => {
  if (!CROSS_PACKAGES.every(crossPackageReady)) {
    try {
      await execFileAsync("bash", [BUILD_SCRIPT], { timeout: 540_000, maxBuffer: 16 << 20 });
    } catch (err) {
      const e = err as { message?: string };
      crossProblem = `build-corpus.sh failed: ${e.message ?? String(err)}`.trim();
    }
    const missing = CROSS_PACKAGES.filter((p) => !crossPackageReady(p));
    if (missing.length > 0 && crossProblem === null) {
      crossProblem = `build-corpus.sh left packages unpacked: ${missing.join(", ")}`;
    }
    if (crossProblem !== null && REQUIRE_CORPUS) {
      throw new Error(`ELFPATCH_REQUIRE_CORPUS=1 but the cross corpus is missing: ${crossProblem}`);
    }
    if (crossProblem !== null) {
      console.warn(`[corpus] skipping the cross-architecture groups: ${crossProblem}`);
    }
  }
  groups = new Map(listCorpus().map((g) => [g.name, g.files]));
}, 600_000);

/** Runs `fn` over `items` with at most `limit` calls in flight; results keep the input order. */
async function mapPool<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

const show = (v: unknown): string => JSON.stringify(v);
const sortedSet = (xs: string[]): string[] => [...new Set(xs)].sort();

/** Every difference between our view of one file and readelf's, as readable lines. */
function compare(path: string, ours: ElfInfo, theirs: ReadelfInfo): string[] {
  const out: string[] = [];
  const check = (field: string, a: unknown, b: unknown): void => {
    if (show(a) !== show(b)) out.push(`${path}: ${field}: elfpatch=${show(a)} readelf=${show(b)}`);
  };
  check("class", ours.class, theirs.class);
  check("endian", ours.endian, theirs.endian);
  if (theirs.machine.number === null) {
    out.push(`${path}: machine: readelf name ${show(theirs.machine.name)} is not in MACHINES`);
  } else {
    check("machine.number", ours.machine.number, theirs.machine.number);
  }
  check("type", ours.type, theirs.type);
  check("osabi.number", ours.osabi.number, theirs.osabi.number);
  check("interpreter", ours.interpreter, theirs.interpreter);
  check("hasDynamic", ours.hasDynamic, theirs.hasDynamic);
  check("hasSectionHeaders", ours.hasSectionHeaders, theirs.hasSectionHeaders);
  check("soname", ours.soname, theirs.soname);
  check("needed", ours.needed, theirs.needed);
  check("rpath", ours.rpath, theirs.rpath);
  check("runpath", ours.runpath, theirs.runpath);
  check("flags", sortedSet(ours.flags), sortedSet(theirs.flags));
  check("flags1", sortedSet(ours.flags1), sortedSet(theirs.flags1));
  // Unknown to readelf (no section headers): not compared.
  if (theirs.versionNeeds !== null) {
    check("versionNeeds", Object.entries(ours.versionNeeds), Object.entries(theirs.versionNeeds));
  }
  if (theirs.versionDefs !== null) check("versionDefs", ours.versionDefs, theirs.versionDefs);
  return out;
}

async function checkFile(path: string): Promise<string[]> {
  const pending = readelfInfo(path); // runs while we inspect the file ourselves
  let ours: Awaited<ReturnType<typeof inspectFile>>;
  try {
    ours = await inspectFile(path);
  } catch (err) {
    await pending.catch(() => undefined);
    return [`${path}: inspectFile threw: ${(err as Error)?.stack ?? String(err)}`];
  }
  let theirs: ReadelfInfo;
  try {
    theirs = await pending;
  } catch (err) {
    return [`${path}: readelf failed: ${(err as Error).message}`];
  }
  if ("error" in ours) {
    return [`${path}: elfpatch error ${ours.error.code}: ${ours.error.message}`];
  }
  return compare(path, ours, theirs);
}

function report(group: string, files: string[], mismatches: string[]): string {
  const dir = corpusDir();
  let saved = "";
  try {
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `mismatches-${group}.txt`);
    writeFileSync(file, mismatches.join("\n") + "\n");
    saved = `\n(full list: ${file})`;
  } catch {
    // read-only cache dir: the summary below is enough
  }
  const badFiles = new Set(mismatches.map((m) => m.slice(0, m.indexOf(": ")))).size;
  const shown = mismatches
    .slice(0, SHOWN_MISMATCHES)
    .map((m) => (m.length > SHOWN_LINE_CHARS ? `${m.slice(0, SHOWN_LINE_CHARS)}…` : m))
    .join("\n");
  const more = mismatches.length > SHOWN_MISMATCHES
    ? `\n... and ${mismatches.length - SHOWN_MISMATCHES} more`
    : "";
  return `${group}: ${mismatches.length} mismatches in ${badFiles} of ${files.length} files:\n${shown}${more}${saved}`;
}

async function checkGroup(group: string): Promise<void> {
  const files = groups.get(group) ?? [];
  const results = await mapPool(files, CONCURRENCY, checkFile);
  const mismatches = results.flat();
  if (mismatches.length > 0) expect.fail(report(group, files, mismatches));
  rmSync(join(corpusDir(), `mismatches-${group}.txt`), { force: true }); // stale from a failed run
}

describe("corpus: inspectFile agrees with readelf", () => {
  it("the corpus is non-trivial", () => {
    expect(groups.get("host")?.length ?? 0).toBeGreaterThanOrEqual(MIN_HOST_FILES);
    if (crossProblem === null) {
      for (const pkg of CROSS_PACKAGES) {
        expect(groups.get(`cross-${pkg}`)?.length ?? 0, `cross-${pkg}`).toBeGreaterThanOrEqual(
          MIN_CROSS_FILES,
        );
      }
    }
  });

  it("host", async () => {
    await checkGroup("host");
  });

  for (const pkg of CROSS_PACKAGES) {
    it(`cross-${pkg}`, async (ctx) => {
      if (crossProblem !== null) {
        console.warn(`[corpus] cross-${pkg} skipped: the cross corpus could not be built`);
        ctx.skip();
      }
      await checkGroup(`cross-${pkg}`);
    });
  }

  it("wheels", async (ctx) => {
    if ((groups.get("wheels") ?? []).length === 0) {
      console.warn("[corpus] wheels skipped: no ELF files under Python's site-packages");
      ctx.skip();
    }
    await checkGroup("wheels");
  });
});
