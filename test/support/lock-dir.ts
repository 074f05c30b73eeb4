/**
 * A directory nobody can add entries to while its files stay writable: `chmod 555` for an ordinary
 * user; for root, who ignores modes, the immutable attribute (`chattr +i`, ext2/3/4, xfs, btrfs).
 * Returns the undo, or null when neither works here (the caller skips).
 */
import { spawnSync } from "node:child_process";
import { chmodSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";

export function lockDir(dir: string): (() => void) | null {
  const root = process.getuid?.() === 0;
  if (root) {
    if (spawnSync("chattr", ["+i", dir], { stdio: "ignore" }).status !== 0) return null;
  } else {
    chmodSync(dir, 0o555);
  }
  const unlock = (): void => {
    if (root) spawnSync("chattr", ["-i", dir], { stdio: "ignore" });
    else chmodSync(dir, 0o755);
  };
  // Check that it holds: no new entry can be made.
  const probe = join(dir, ".elfpatch-lock-probe");
  try {
    writeFileSync(probe, "");
  } catch {
    return unlock;
  }
  rmSync(probe, { force: true });
  unlock();
  return null;
}
