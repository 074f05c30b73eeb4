/**
 * dlopen() for many files at once. A tiny C program (compiled once, cached in
 * `<repo>/.cache/tools/`) takes paths as arguments and prints one line per path: `OK`, or the
 * `dlerror()` text. Each path is opened in a forked child, so libraries cannot see each other
 * (a library loaded for one path never satisfies a dependency of the next) and a constructor
 * that crashes, exits or hangs only costs that one path: the line then reads `!CRASH signal <n>`,
 * `!EXIT <status>` or `!TIMEOUT`. The child closes stdin/stdout/stderr first (constructors may
 * print) and leaves with `_exit` (no destructors run).
 *
 * Options of the program: `-c` makes the child `chdir` to the directory of the path before the
 * dlopen (so relative run path entries, which glibc resolves against the working directory,
 * mean "next to the file"); `-t <seconds>` is the per-path time limit; `-g <lib>` (repeatable)
 * dlopens `lib` with RTLD_GLOBAL in the parent first, so every child starts with it loaded (e.g.
 * libpython for extension modules, which otherwise fail on their first Python symbol).
 *
 * The host side splits the paths into chunks, runs a few programs at a time, and if a program
 * dies anyway or prints the wrong number of lines, runs that chunk again one path per process.
 */
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { buildTool } from "./oracle.js";

const SOURCE = String.raw`#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void put_line(const char *s) {
  size_t n = strlen(s);
  fwrite(s, 1, n, stdout);
  fputc('\n', stdout);
  fflush(stdout);
}

int main(int argc, char **argv) {
  int opt, chdir_flag = 0;
  unsigned timeout = 20;
  while ((opt = getopt(argc, argv, "ct:g:")) != -1) {
    if (opt == 'c') chdir_flag = 1;
    else if (opt == 't') timeout = (unsigned)atoi(optarg);
    else if (opt == 'g') {
      if (dlopen(optarg, RTLD_NOW | RTLD_GLOBAL) == NULL) { fprintf(stderr, "preload: %s\n", dlerror()); return 4; }
    } else return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  for (int i = optind; i < argc; i++) {
    const char *file = argv[i];
    int fds[2];
    if (pipe(fds) != 0) { perror("pipe"); return 3; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 3; }
    if (pid == 0) {
      close(fds[0]);
      int null = open("/dev/null", O_RDWR);
      if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); if (null > 2) close(null); }
      if (chdir_flag) {
        char *copy = strdup(file);
        if (copy == NULL || chdir(dirname(copy)) != 0) _exit(120);
      }
      alarm(timeout);
      void *h = dlopen(file, RTLD_LAZY | RTLD_LOCAL);
      const char *msg = h ? "OK" : dlerror();
      if (msg == NULL) msg = "(dlopen failed without dlerror)";
      char line[4096];
      size_t n = strlen(msg);
      if (n > sizeof line - 1) n = sizeof line - 1;
      memcpy(line, msg, n);
      for (size_t k = 0; k < n; k++) if (line[k] == '\n' || line[k] == '\r') line[k] = ' ';
      if (n > 0 && line[0] == '!') line[0] = '?'; /* '!' starts this program's own verdicts */
      size_t done = 0;
      while (done < n) {
        ssize_t w = write(fds[1], line + done, n - done);
        if (w <= 0) break;
        done += (size_t)w;
      }
      _exit(0);
    }
    close(fds[1]);
    char buf[4096];
    size_t len = 0;
    for (;;) {
      ssize_t r = read(fds[0], buf + len, sizeof buf - 1 - len);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      len += (size_t)r;
      if (len >= sizeof buf - 1) break;
    }
    buf[len] = 0;
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    char verdict[64];
    if (WIFSIGNALED(status)) {
      if (WTERMSIG(status) == SIGALRM) snprintf(verdict, sizeof verdict, "!TIMEOUT");
      else snprintf(verdict, sizeof verdict, "!CRASH signal %d", WTERMSIG(status));
      put_line(verdict);
    } else if (WEXITSTATUS(status) != 0 || len == 0) {
      snprintf(verdict, sizeof verdict, "!EXIT %d", WEXITSTATUS(status));
      put_line(verdict);
    } else {
      put_line(buf);
    }
  }
  return 0;
}
`;

/** Builds the program once per source and compiler (cached on disk); returns its path. */
export function dlopenManyTool(): string {
  return buildTool("dlopen-many", SOURCE, ["-Wall"]);
}

export interface DlopenOutcome {
  /** dlopen returned a handle. */
  ok: boolean;
  /** `OK`, the dlerror() text, or a verdict of the program (`!CRASH signal 11`, `!EXIT 1`, `!TIMEOUT`). */
  message: string;
}

export interface DlopenManyOptions {
  /** chdir to each file's directory before its dlopen (default false). */
  chdir?: boolean;
  /** Paths per program run (default 64). */
  chunkSize?: number;
  /** Programs running at once (default 2). */
  concurrency?: number;
  /** Per-path time limit in seconds (default 20). */
  timeoutSec?: number;
  /** Libraries loaded RTLD_GLOBAL before any path (same for every path). */
  preload?: string[];
  env?: NodeJS.ProcessEnv;
}

/** One run of the program: its lines, or null when it died or lost lines. Rejects on a failed preload. */
function runTool(args: string[], files: string[], opts: DlopenManyOptions): Promise<string[] | null> {
  const budgetMs = (opts.timeoutSec ?? 20) * 1000 * files.length + 10_000;
  return new Promise((resolve, reject) => {
    execFile(
      dlopenManyTool(),
      [...args, "--", ...files],
      { encoding: "utf8", maxBuffer: 64 << 20, timeout: budgetMs, env: opts.env ? { ...process.env, ...opts.env } : process.env },
      (err, stdout, stderr) => {
        if (err && err.code === 4) return reject(new Error(`dlopen-many: ${stderr.trim()}`));
        const lines = stdout.split("\n");
        if (lines.at(-1) === "") lines.pop();
        resolve(err || lines.length !== files.length ? null : lines);
      },
    );
  });
}

function outcome(line: string): DlopenOutcome {
  return { ok: line === "OK", message: line };
}

/** dlopen(RTLD_LAZY | RTLD_LOCAL) of every file, each in its own child process; results in input order. */
export async function dlopenMany(files: string[], opts: DlopenManyOptions = {}): Promise<DlopenOutcome[]> {
  const abs = files.map((f) => path.resolve(f));
  const args = ["-t", String(opts.timeoutSec ?? 20), ...(opts.chdir ? ["-c"] : [])];
  for (const lib of opts.preload ?? []) args.push("-g", lib);
  const size = Math.max(1, opts.chunkSize ?? 64);
  const chunks: number[] = [];
  for (let i = 0; i < abs.length; i += size) chunks.push(i);
  const out: DlopenOutcome[] = new Array(abs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < chunks.length) {
      const start = chunks[next++];
      const part = abs.slice(start, start + size);
      const lines = await runTool(args, part, opts);
      if (lines) {
        lines.forEach((l, k) => (out[start + k] = outcome(l)));
        continue;
      }
      // The program itself died or lost lines: one process per file for this chunk.
      for (let k = 0; k < part.length; k++) {
        const one = await runTool(args, [part[k]], opts);
        out[start + k] = one ? outcome(one[0]) : { ok: false, message: "!TOOL_DIED" };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 2) }, worker));
  return out;
}

/**
 * Libraries to preload so that modules load on their own: libpython (for extension modules)
 * and libperl (for perl XS modules), when present. `hostFiles`: where to look for libperl.
 */
export function dlopenPreloads(hostFiles: string[]): string[] {
  const out: string[] = [];
  const perl = hostFiles.find((f) => /\/libperl\.so\.[\d.]+$/.test(f));
  if (perl) out.push(perl);
  try {
    const code = "import sysconfig, json; print(json.dumps([sysconfig.get_config_var(k) for k in ('LIBDIR', 'INSTSONAME')]))";
    const [dir, name] = JSON.parse(
      execFileSync("python3", ["-c", code], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 30_000 }),
    ) as [string | null, string | null];
    if (dir && name && fs.existsSync(path.join(dir, name))) out.push(path.join(dir, name));
  } catch {
    // No python3: no extension modules to load either.
  }
  return out;
}
