/** The run-path policy: order of steps, prefixes by path component, shrink against real files. */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { computeRunpath, LibraryProbe, plannedNeeded, runpathRequest, underPrefix } from "../../../src/policy/rpath.js";
import type { ElfInfo } from "../../../src/core/types.js";
import { inspectFile, isFileError, patchFile } from "../../../src/index.js";

const HOST = "/usr/lib/x86_64-linux-gnu";
const HAS_I386 = existsSync(join(process.cwd(), ".cache", "corpus", "cross", "libc6-i386"));

function info(over: Partial<ElfInfo>): ElfInfo {
  const real = inspectFile(join(HOST, "libz.so.1"));
  if (isFileError(real)) throw new Error(real.error.message);
  return { ...real, ...over };
}

describe("underPrefix", () => {
  it("matches whole path components only", () => {
    expect(underPrefix("/nix/store/abc/lib", "/nix/store")).toBe(true);
    expect(underPrefix("/nix/storefoo/lib", "/nix/store")).toBe(false);
    expect(underPrefix("/nix/store", "/nix/store/")).toBe(true);
    expect(underPrefix("$ORIGIN/../lib", "$ORIGIN")).toBe(true);
    expect(underPrefix("${ORIGIN}/x", "$ORIGIN")).toBe(true);
    expect(underPrefix("$ORIGINX/x", "$ORIGIN")).toBe(false);
    expect(underPrefix("/anything", "/")).toBe(true);
  });
});

describe("computeRunpath", () => {
  let dir: string;
  let provider: string;
  let empty: string;
  let wrongClass: string | null = null;
  const probe = new LibraryProbe();

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "elfpatch-policy-"));
    provider = join(dir, "provider");
    empty = join(dir, "empty");
    mkdirSync(provider);
    mkdirSync(empty);
    copyFileSync(join(HOST, "libc.so.6"), join(provider, "libc.so.6"));
    writeFileSync(join(empty, "libc.so.6"), "not an ELF file\n");
    // A 32-bit libc from Debian's i386 package (the cross corpus), when it was built.
    const i386 = join(process.cwd(), ".cache", "corpus", "cross", "libc6-i386");
    const found = existsSync(i386) ? findFile(i386, "libc.so.6") : null;
    if (found) {
      wrongClass = join(dir, "wrongclass");
      mkdirSync(wrongClass);
      copyFileSync(found, join(wrongClass, "libc.so.6"));
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("adds, then shrinks (the add is not dropped as patchelf does)", () => {
    const i = info({ runpath: null, rpath: "$ORIGIN/../lib:/gone", needed: ["libc.so.6"] });
    const out = computeRunpath(i, join(dir, "x.so"), { add: [provider], shrink: true, force: true }, probe);
    expect(out).toEqual(["$ORIGIN/../lib", provider]);
    expect(runpathRequest(i, out, { force: true })).toEqual({ setRpath: `$ORIGIN/../lib:${provider}`, rpathTag: "rpath" });
  });

  it("appends only directories not already present, keeping order", () => {
    const i = info({ runpath: "/a:/b", rpath: null });
    expect(computeRunpath(i, "/x.so", { add: ["/b:/c", "/a"] }, probe)).toEqual(["/a", "/b", "/c"]);
  });

  it("keeps only entries under the allowed prefixes", () => {
    const i = info({ runpath: "$ORIGIN:/usr/lib:/nix/store/x/lib:/nix/storey", rpath: null });
    expect(computeRunpath(i, "/x.so", { allowedPrefixes: ["$ORIGIN", "/nix/store"] }, probe)).toEqual([
      "$ORIGIN",
      "/nix/store/x/lib",
    ]);
  });

  it("shrink drops non-ELF candidates, duplicates, empty entries and directories that serve nothing new", () => {
    const i = info({ runpath: `:${empty}:${provider}:${provider}:${dir}`, rpath: null, needed: ["libc.so.6"] });
    expect(computeRunpath(i, "/x.so", { shrink: true }, probe)).toEqual([provider]);
  });

  it("shrink keeps $ORIGIN-relative entries as written and drops absolute ones that serve nothing", () => {
    const i = info({ runpath: "/abs/elsewhere", rpath: null, needed: ["libc.so.6"] });
    const out = computeRunpath(i, join(dir, "x.so"), { add: ["$ORIGIN/provider"], shrink: true }, probe);
    expect(out).toEqual(["$ORIGIN/provider"]); // non-absolute entries are kept as written
  });

  // Needs the cross corpus (test/corpus/build-corpus.sh, run by .ci/run before the tests).
  it.skipIf(!HAS_I386 && !process.env.ELFPATCH_REQUIRE_CORPUS)("shrink ignores a candidate of the wrong class", () => {
    expect(wrongClass, "the i386 libc of the cross corpus").not.toBeNull();
    const i = info({ runpath: `${wrongClass}:${provider}`, rpath: null, needed: ["libc.so.6"] });
    expect(computeRunpath(i, "/x.so", { shrink: true }, probe)).toEqual([provider]);
  });

  it("an empty result removes the run path", () => {
    const i = info({ runpath: "/gone", rpath: null, needed: ["libc.so.6"] });
    const out = computeRunpath(i, "/x.so", { shrink: true }, probe);
    expect(out).toEqual([]);
    expect(runpathRequest(i, out, {})).toEqual({ removeRpath: true });
  });
});

function findFile(root: string, name: string): string | null {
  for (const e of readdirSync(root, { withFileTypes: true })) {
    const p = join(root, e.name);
    if (e.isDirectory()) {
      const f = findFile(p, name);
      if (f) return f;
    } else if (e.name === name && e.isFile()) return p;
  }
  return null;
}

describe("plannedNeeded (how a batch's libraries are resolved before they are edited)", () => {
  it("gives the NEEDED list the core writes for removals, replacements and additions", () => {
    const dir = mkdtempSync(join(tmpdir(), "elfpatch-needed-"));
    try {
      const lib = join(dir, "libcurl.so.4");
      copyFileSync(join(HOST, "libcurl.so.4"), lib);
      const before = inspectFile(lib);
      if (isFileError(before)) throw new Error(before.error.message);
      expect(before.needed.length).toBeGreaterThan(5);
      const [first, second] = before.needed;
      const req = {
        removeNeeded: [first!],
        replaceNeeded: [[second!, "libreplaced.so.1"]] as [string, string][],
        addNeeded: ["libextra.so", "libc.so.6", "libmore.so", "libextra.so"],
      };
      const r = patchFile(lib, req);
      if (isFileError(r)) throw new Error(r.error.message);
      const after = inspectFile(lib);
      if (isFileError(after)) throw new Error(after.error.message);
      expect(plannedNeeded(before.needed, req)).toEqual(after.needed);
      expect(after.needed.slice(0, 2)).toEqual(["libextra.so", "libmore.so"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
