/** A progress line on stderr, only on a terminal (not under CI, not with --no-progress). */

export interface Progress {
  start(files: number, bytes: number): void;
  file(bytes: number): void;
  stop(): void;
}

const NONE: Progress = { start() {}, file() {}, stop() {} };

/** The progress line; its library is loaded only when a terminal will show it. */
export async function createProgress(enabled: boolean): Promise<Progress> {
  if (!enabled || !process.stderr.isTTY || process.env.CI) return NONE;
  const { default: cliProgress } = await import("cli-progress");
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: "{bar} {value}/{total} files | {mb} MB | {rate} files/s | ETA {eta_formatted}",
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const t0 = performance.now();
  let bytes = 0;
  let done = 0;
  return {
    start(files) {
      bar.start(files, 0, { mb: "0", rate: "0" });
    },
    file(b) {
      bytes += b;
      done++;
      const secs = (performance.now() - t0) / 1000;
      bar.update(done, { mb: (bytes / 1e6).toFixed(1), rate: secs > 0 ? Math.round(done / secs) : 0 });
    },
    stop() {
      bar.stop();
    },
  };
}
