/**
 * Writes a batch's edits to disk while the batch goes on, so that the sync that must end it (before
 * undo journals go) finds little left to write: one `sh` loop, started once, runs `sync -f DIR`
 * (a `syncfs` of the file system holding DIR) for every directory it is sent, and answers a line
 * each time. Nothing here is needed for durability (the batch's own final sync is): a helper that
 * cannot start or dies only means a longer final sync.
 */
import { spawn, type ChildProcess } from "node:child_process";

const LOOP = 'while IFS= read -r d; do sync -f -- "$d" >/dev/null 2>&1; echo; done';

export class BackgroundSync {
  private child: ChildProcess | null = null;
  private dead = false;
  /** Syncs asked for and not yet answered. */
  private pending = 0;
  private readonly idle: (() => void)[] = [];

  /** Whether a sync asked for is still running. */
  get busy(): boolean {
    return this.pending > 0;
  }

  /** Starts a sync of the file system holding `dir` (unless the helper is unavailable). */
  request(dir: string): void {
    if (this.dead || dir.includes("\n")) return;
    const c = this.child ?? this.start();
    if (c === null) return;
    this.pending++;
    c.stdin!.write(`${dir}\n`);
  }

  /** Resolves once every sync asked for has finished (or the helper is gone). */
  settled(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  close(): void {
    this.child?.stdin?.end();
    this.child?.unref();
    this.child = null;
  }

  private start(): ChildProcess | null {
    let c: ChildProcess;
    try {
      c = spawn("sh", ["-c", LOOP], { stdio: ["pipe", "pipe", "ignore"] });
    } catch {
      this.dead = true;
      return null;
    }
    const gone = (): void => {
      this.dead = true;
      this.child = null;
      this.pending = 0;
      this.wake();
    };
    c.on("error", gone);
    c.on("exit", gone);
    c.stdin!.on("error", gone);
    c.stdout!.on("data", (chunk: Buffer) => {
      for (const byte of chunk) if (byte === 10 && this.pending > 0) this.pending--;
      if (this.pending === 0) this.wake();
    });
    this.child = c;
    return c;
  }

  private wake(): void {
    for (const resolve of this.idle.splice(0)) resolve();
  }
}
