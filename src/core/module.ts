/**
 * Finds and compiles the core's Wasm module once per process. The compiled `WebAssembly.Module`
 * is what worker threads receive (it is structured-clone safe) and register (`useCoreModule`), so
 * code is compiled only in the main thread.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { ElfPatchError, ErrorCode } from "../errors.js";

export type CoreFlavor = "release" | "debug";

const cache = new Map<CoreFlavor, WebAssembly.Module>();

/** Walks up from this file to the package root (the directory holding `build/wasm`). */
export function wasmPath(flavor: CoreFlavor = "release"): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, "build", "wasm", `core.${flavor}.wasm`);
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  throw new ElfPatchError(ErrorCode.INTERNAL, `Missing build/wasm/core.${flavor}.wasm; run npm run build`);
}

/**
 * Makes `module` this thread's compiled core of `flavor`: a worker thread registers the module the
 * main thread compiled and sent it, so that every engine the worker creates (the batch's, and the
 * resolver's for `--shrink-rpath`) instantiates it instead of compiling the file again.
 */
export function useCoreModule(module: WebAssembly.Module, flavor: CoreFlavor = "release"): void {
  cache.set(flavor, module);
}

export function coreModule(flavor: CoreFlavor = "release"): WebAssembly.Module {
  let m = cache.get(flavor);
  if (!m) {
    m = new WebAssembly.Module(readFileSync(wasmPath(flavor)));
    cache.set(flavor, m);
  }
  return m;
}
