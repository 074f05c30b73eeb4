/**
 * How this machine runs i386 programs (Debian's libc6-i386 loader, the cross corpus's): natively on
 * an x86-64 kernel with IA32 emulation, else under qemu-i386 (qemu-user). A kernel built or booted
 * without it (seen: a Firecracker VM, whose `/lib/ld-linux.so.2 --help` fails with "Exec format
 * error") must not turn the i386 oracles into comparisons of two failed runs.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

/** Debian's i386 loader on an amd64 system with libc6-i386. */
export const I386_LOADER = "/lib/ld-linux.so.2";

const prefixes = new Map<string, string[] | null>();

/**
 * The command prefix that runs the i386 program `probe` (a loader, run with `--version`): `[]`
 * natively, `["qemu-i386"]`, or null when neither runs it (or it does not exist).
 */
export function i386Prefix(probe: string = I386_LOADER): string[] | null {
  const known = prefixes.get(probe);
  if (known !== undefined) return known;
  let prefix: string[] | null = null;
  if (existsSync(probe)) {
    for (const p of [[], ["qemu-i386"]]) {
      const [cmd, ...args] = [...p, probe, "--version"];
      if (spawnSync(cmd!, args, { encoding: "utf8", timeout: 30_000 }).status === 0) {
        prefix = p;
        break;
      }
    }
  }
  prefixes.set(probe, prefix);
  return prefix;
}

/** `[command, args]` running the i386 `program` with `args` here (natively when the probe ran so). */
export function i386Command(program: string, args: string[], probe: string = I386_LOADER): [string, string[]] {
  const [cmd, ...rest] = [...(i386Prefix(probe) ?? []), program, ...args];
  return [cmd!, rest];
}
