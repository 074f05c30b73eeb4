/** Parses raw commander options into typed requests. Nothing downstream reads raw options. */
import { InvalidArgumentError } from "commander";
import type { EditRequest } from "../core/types.js";

export interface RawPatchOptions {
  setRpath?: string;
  removeRpath?: boolean;
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

/** Builds the edit request; the fields are applied in EditRequest's documented order. */
export function toEditRequest(o: RawPatchOptions): EditRequest {
  if (o.setRpath !== undefined && o.removeRpath) {
    throw new InvalidArgumentError("--set-rpath and --remove-rpath exclude each other");
  }
  const req: EditRequest = {};
  if (o.setInterpreter !== undefined) req.interpreter = o.setInterpreter;
  if (o.setSoname !== undefined) req.soname = o.setSoname;
  if (o.removeRpath) req.removeRpath = true;
  if (o.setRpath !== undefined) {
    req.setRpath = o.setRpath;
    req.rpathTag = o.forceRpath ? "rpath" : "runpath";
  }
  if (o.removeNeeded?.length) req.removeNeeded = o.removeNeeded;
  if (o.replaceNeeded?.length) req.replaceNeeded = o.replaceNeeded;
  if (o.addNeeded?.length) req.addNeeded = o.addNeeded;
  if (o.noDefaultLib) req.noDefaultLib = true;
  return req;
}
