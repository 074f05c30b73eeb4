/** Parses raw commander options into typed requests. Nothing downstream reads raw options. */
import { InvalidArgumentError } from "./commander.js";
import type { EditRequest } from "../core/types.js";
import type { RpathPolicy } from "../policy/rpath.js";

export interface RawPatchOptions {
  setRpath?: string;
  removeRpath?: boolean;
  addRpath?: string[];
  shrinkRpath?: boolean;
  allowedRpathPrefixes?: string;
  forceRpath?: boolean;
  removeNeeded?: string[];
  replaceNeeded?: [string, string][];
  addNeeded?: string[];
  setSoname?: string;
  setInterpreter?: string;
  noDefaultLib?: boolean;
  json?: boolean;
  dryRun?: boolean;
}

/** commander argParser for positive integers (`--jobs`). */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("expected a positive integer");
  return n;
}

/** commander argParser for repeatable string options. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), noNul(value)];
}

/** commander argParser for `--replace-needed OLD=NEW` (repeatable). */
export function collectPair(value: string, previous: [string, string][] | undefined): [string, string][] {
  const i = value.indexOf("=");
  if (i <= 0 || i === value.length - 1) throw new InvalidArgumentError("expected OLD=NEW");
  return [...(previous ?? []), [noNul(value.slice(0, i)), noNul(value.slice(i + 1))]];
}

export function noNul(value: string): string {
  if (value.includes("\0")) throw new InvalidArgumentError("must not contain a NUL byte");
  return value;
}

/** What `patch` does to each file: core edits, and the run-path policy the host resolves per file. */
export interface PatchSpec {
  req: EditRequest;
  rpath: RpathPolicy;
}

/** Builds the patch spec; the fields are applied in EditRequest's and RpathPolicy's documented order. */
export function toPatchSpec(o: RawPatchOptions): PatchSpec {
  if (o.setRpath !== undefined && o.removeRpath) {
    throw new InvalidArgumentError("--set-rpath and --remove-rpath exclude each other");
  }
  if (o.setRpath !== undefined && o.addRpath?.length) {
    throw new InvalidArgumentError("--set-rpath and --add-rpath exclude each other (put every directory in --set-rpath)");
  }
  const req: EditRequest = {};
  if (o.setInterpreter !== undefined) req.interpreter = o.setInterpreter;
  if (o.setSoname !== undefined) req.soname = o.setSoname;
  const rpath: RpathPolicy = {};
  if (o.removeRpath) rpath.remove = true;
  if (o.setRpath !== undefined) rpath.set = o.setRpath;
  if (o.addRpath?.length) rpath.add = o.addRpath;
  if (o.allowedRpathPrefixes !== undefined) rpath.allowedPrefixes = o.allowedRpathPrefixes.split(":").filter((p) => p !== "");
  if (o.shrinkRpath) rpath.shrink = true;
  if (o.forceRpath) rpath.force = true;
  if (o.removeNeeded?.length) req.removeNeeded = o.removeNeeded;
  if (o.replaceNeeded?.length) req.replaceNeeded = o.replaceNeeded;
  if (o.addNeeded?.length) req.addNeeded = o.addNeeded;
  if (o.noDefaultLib) req.noDefaultLib = true;
  return { req, rpath };
}
