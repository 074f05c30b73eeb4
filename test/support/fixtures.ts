/**
 * Builds the C fixtures of fixtures/recipes.ts with gcc into a content-addressed cache directory,
 * `<repo>/.cache/fixtures/<hash>/`, where the hash covers the sources, the recipes and
 * `gcc --version`. A finished build is never rebuilt or edited: tests copy the tree first.
 */
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { recipes, type Recipe } from "../../fixtures/recipes.js";

/** Bump to force a rebuild when this builder's behaviour changes. */
const BUILDER_VERSION = "1";

export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
export const fixtureSourceDir = path.join(repoRoot, "fixtures", "src");
export const cacheRoot = path.join(repoRoot, ".cache");

let built: Promise<string> | undefined;
let builtDir: string | undefined;

/** Where a fixture lands inside a build (or copied) tree. */
export function fixtureRelPath(name: string): string {
  const recipe = recipes[name];
  if (!recipe) throw new Error(`unknown fixture ${name}`);
  return recipe.out ?? name;
}

/** Path of fixture `name` in `root` (default: the cached build; call `buildFixtures` first). */
export function fixture(name: string, root?: string): string {
  const base = root ?? builtDir;
  if (!base) throw new Error("fixtures are not built yet: await buildFixtures() first");
  return path.join(base, fixtureRelPath(name));
}

/** Copies the whole built tree (with `deps/` and `alt/`) into `tmpDir`; returns `tmpDir`. */
export function copyFixtureTree(tmpDir: string): string {
  if (!builtDir) throw new Error("fixtures are not built yet: await buildFixtures() first");
  fs.cpSync(builtDir, tmpDir, { recursive: true });
  return tmpDir;
}

/** A fresh directory under the OS temp dir. */
export function makeTempDir(prefix = "elfpatch-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A fresh temp dir holding a copy of the fixture tree. */
export function freshFixtureCopy(): string {
  return copyFixtureTree(makeTempDir());
}

function gccVersion(): string {
  return execFileSync("gcc", ["--version"], { encoding: "utf8" });
}

function buildHash(): string {
  const h = createHash("sha256");
  h.update(`builder ${BUILDER_VERSION}\n`);
  h.update(gccVersion());
  h.update(JSON.stringify(recipes));
  for (const file of fs.readdirSync(fixtureSourceDir).sort()) {
    h.update(`\n--- ${file}\n`);
    h.update(fs.readFileSync(path.join(fixtureSourceDir, file)));
  }
  return h.digest("hex").slice(0, 16);
}

function gccArgs(name: string, recipe: Recipe, dir: string): string[] {
  const args = ["-o", path.join(dir, fixtureRelPath(name))];
  for (const src of recipe.sources) {
    const file = path.join(fixtureSourceDir, src);
    args.push(src.endsWith(".map") ? `-Wl,--version-script,${file}` : file);
  }
  args.push(...recipe.flags);
  for (const dep of recipe.deps) args.push(path.join(dir, fixtureRelPath(dep)));
  return args;
}

function buildInto(dir: string): void {
  for (const [name, recipe] of Object.entries(recipes)) {
    const out = path.join(dir, fixtureRelPath(name));
    fs.mkdirSync(path.dirname(out), { recursive: true });
    for (const dep of recipe.deps) {
      if (!fs.existsSync(path.join(dir, fixtureRelPath(dep)))) {
        throw new Error(`fixture ${name} depends on ${dep}, which must come earlier in recipes`);
      }
    }
    try {
      execFileSync("gcc", gccArgs(name, recipe, dir), { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`gcc failed for fixture ${name}: ${e.stderr ?? e.message}`);
    }
  }
}

async function buildOnce(): Promise<string> {
  const dir = path.join(cacheRoot, "fixtures", buildHash());
  if (fs.existsSync(path.join(dir, ".complete"))) return dir;
  // Several test processes may build at once: each builds in its own directory and renames it
  // into place; the loser of the race throws its copy away.
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const tmp = fs.mkdtempSync(`${dir}.tmp-`);
  try {
    buildInto(tmp);
    fs.writeFileSync(path.join(tmp, ".complete"), "");
    try {
      fs.renameSync(tmp, dir);
    } catch (err) {
      if (!fs.existsSync(path.join(dir, ".complete"))) throw err;
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return dir;
}

/** Builds every fixture (once per process, and once per content hash on disk); returns the dir. */
export function buildFixtures(): Promise<string> {
  built ??= buildOnce().then((dir) => {
    builtDir = dir;
    return dir;
  });
  return built;
}

/** Names of all fixtures. */
export function fixtureNames(): string[] {
  return Object.keys(recipes);
}
