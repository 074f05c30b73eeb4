/**
 * Syncs of whole file systems that run while a batch goes on: one `sh` loop, started once, runs
 * `sync -f DIR` (a `syncfs` of the file system holding DIR) for every directory it is sent, in
 * order, and answers each with its exit status. In place, they leave the batch's final sync little
 * to write; for renamed copies, a thread makes the next shard's copies while the last shard's are
 * written to disk (see ShardWriter). A request resolves true once its sync, started after the
 * request, has ended; false when none was made (the helper could not start, died, or `sync -f`
 * failed): the caller then syncs by other means.
 */
import type { ChildProcess } from "node:child_process";

const LOOP = 'while IFS= read -r d; do sync -f -- "$d" >/dev/null 2>&1; echo $?; done';

export class BackgroundSync {
  private child: ChildProcess | null = null;
  private dead = false;
  /** The requests not yet answered, oldest first. */
  private readonly waiting: ((ok: boolean) => void)[] = [];
  private partial = "";
  /** The last request (answered after every earlier one). */
  private last: Promise<boolean> = Promise.resolve(false);

  /** Whether a sync asked for is still running. */
  get busy(): boolean {
    return this.waiting.length > 0;
  }

  /** Starts a sync of the file system holding `dir`; resolves true once it has ended. */
  request(dir: string): Promise<boolean> {
    if (this.dead || dir.includes("\n")) return Promise.resolve(false);
    const c = this.child ?? this.start();
    if (c === null) return Promise.resolve(false);
    this.last = new Promise((resolve) => {
      this.waiting.push(resolve);
      c.stdin!.write(`${dir}\n`);
    });
    return this.last;
  }

  /** Resolves once every sync asked for has ended (or the helper is gone). */
  async settled(): Promise<void> {
    await this.last;
  }

  close(): void {
    this.child?.stdin?.end();
    this.child?.unref();
    this.child = null;
  }

  private start(): ChildProcess | null {
    let c: ChildProcess;
    try {
      const { spawn } = require("node:child_process") as typeof import("node:child_process"); // (loaded at first use: see safe-write.ts)
      c = spawn("sh", ["-c", LOOP], { stdio: ["pipe", "pipe", "ignore"] });
    } catch {
      this.dead = true;
      return null;
    }
    const gone = (): void => {
      this.dead = true;
      this.child = null;
      for (const resolve of this.waiting.splice(0)) resolve(false);
    };
    c.on("error", gone);
    c.on("exit", gone);
    c.stdin!.on("error", gone);
    c.stdout!.setEncoding("latin1");
    c.stdout!.on("data", (chunk: string) => {
      const lines = (this.partial + chunk).split("\n");
      this.partial = lines.pop()!;
      for (const line of lines) this.waiting.shift()?.(line.trim() === "0");
    });
    this.child = c;
    return c;
  }
}
