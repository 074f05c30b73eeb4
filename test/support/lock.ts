/**
 * Paths nobody can change: a directory nobody can add entries to (its files stay writable), or a
 * file nobody can open for writing. `chmod` for an ordinary user; for root, who ignores modes, the
 * immutable attribute (`chattr +i`: ext2/3/4, xfs, btrfs). Each returns the undo, or null when
 * that does not hold here (the caller skips).
 */
import { spawnSync } from "node:child_process";
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function lock(path: string, userMode: number, holds: () => boolean): (() => void) | null {
  const root = process.getuid?.() === 0;
  const mode = statSync(path).mode & 0o7777;
  if (root) {
    if (spawnSync("chattr", ["+i", path], { stdio: "ignore" }).status !== 0) return null;
  } else {
    chmodSync(path, userMode);
  }
  const unlock = (): void => {
    if (root) spawnSync("chattr", ["-i", path], { stdio: "ignore" });
    else chmodSync(path, mode);
  };
  if (holds()) return unlock;
  unlock();
  return null;
}

/** `dir` refuses new entries. */
export function lockDir(dir: string): (() => void) | null {
  return lock(dir, 0o555, () => {
    const probe = join(dir, ".elfpatch-lock-probe");
    try {
      writeFileSync(probe, "");
    } catch {
      return true;
    }
    rmSync(probe, { force: true });
    return false;
  });
}

/** `file` cannot be opened for writing. */
export function lockFile(file: string): (() => void) | null {
  return lock(file, 0o444, () => {
    try {
      closeSync(openSync(file, "r+"));
    } catch {
      return true;
    }
    return false;
  });
}

export interface LockedTree {
  dir: string;
  /** Refuses new entries (its files stay writable). */
  locked: string;
  open: string;
  /** Unlocks and removes the tree. */
  dispose(): void;
}

/**
 * A temp tree with two directories, `locked` and `open`, filled by `fill` before `locked` is
 * locked; null (nothing left behind) when no lock holds here.
 */
export function lockedTree(prefix: string, fill: (locked: string, open: string) => void): LockedTree | null {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const locked = join(dir, "locked");
  const open = join(dir, "open");
  mkdirSync(locked);
  mkdirSync(open);
  fill(locked, open);
  const unlock = lockDir(locked);
  const dispose = (): void => {
    unlock?.();
    rmSync(dir, { recursive: true, force: true });
  };
  if (unlock === null) {
    dispose();
    return null;
  }
  return { dir, locked, open, dispose };
}
