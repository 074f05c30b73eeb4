/**
 * An independent oracle for `inspectFile`: runs GNU `readelf -W -h -l -d -V` once per file and
 * parses its text into the fields of `ElfInfo` that readelf shows.
 *
 * Fields readelf cannot tell reliably are `null` ("unknown", never compared):
 * - `versionNeeds` / `versionDefs` when the file has no section headers (`readelf -V` walks the
 *   section table, so it prints nothing useful there);
 * - `machine.number` / `osabi.number` when readelf prints a name missing from our tables.
 */
import { execFile } from "node:child_process";
import type { ElfInfo } from "../../src/core/types.js";

export interface ReadelfInfo {
  class: ElfInfo["class"] | null;
  endian: ElfInfo["endian"] | null;
  /** `number` is null when readelf's machine name is not in `MACHINES`. */
  machine: { number: number | null; name: string };
  type: string | null;
  /** From byte 7 of the `Magic:` line (EI_OSABI). */
  osabi: { number: number | null; name: string };
  interpreter: string | null;
  soname: string | null;
  needed: string[];
  /** The last `DT_RPATH` / `DT_RUNPATH` shown (as glibc uses the last one). */
  rpath: string | null;
  runpath: string | null;
  flags: string[];
  flags1: string[];
  /** Whether the program header table has a `DYNAMIC` (PT_DYNAMIC) entry. */
  hasDynamic: boolean;
  /** Whether `e_shnum` (or its extended form) is non-zero and readelf did not complain about it. */
  hasSectionHeaders: boolean;
  versionNeeds: ElfInfo["versionNeeds"] | null;
  versionDefs: ElfInfo["versionDefs"] | null;
  /** readelf's stderr lines (warnings), and its exit code. */
  warnings: string[];
  exitCode: number;
}

/** readelf's `Machine:` text -> e_machine, for the machines we are likely to meet. */
export const MACHINES: Record<string, number> = {
  "None": 0,
  "Sparc": 2,
  "Intel 80386": 3,
  "MC68000": 4,
  "MIPS R3000": 8,
  "HPPA": 15,
  "PowerPC": 20,
  "PowerPC64": 21,
  "IBM S/390": 22,
  "ARM": 40,
  "Renesas / SuperH SH": 42,
  "Sparc v9": 43,
  "Intel IA-64": 50,
  "Advanced Micro Devices X86-64": 62,
  "AArch64": 183,
  "RISC-V": 243,
  "Linux BPF": 247,
  "LoongArch": 258,
};

/** readelf's `OS/ABI:` text -> EI_OSABI, only used to name the number read from `Magic:`. */
const OSABI_NAMES: Record<number, string> = {
  0: "UNIX - System V",
  3: "UNIX - GNU",
  6: "UNIX - Solaris",
  9: "UNIX - FreeBSD",
};

/** `0x1b (FLAGS)   BIND_NOW` and friends: tag name and value text. */
const DYN_LINE = /^\s*0x[0-9a-fA-F]+ \(([A-Za-z0-9_]+)\)\s+(.*)$/;
const VERNEED_FILE = /^\s*\S+: Version: \d+\s+File: (.*?)\s+Cnt: \d+\s*$/;
const VERNEED_NAME = /^\s*\S+:\s+Name: (.*?)\s+Flags: .*?\s+Version: \d+\s*$/;
const VERDEF_ENTRY = /^\s*\S+: Rev: \d+\s+Flags: .*?\s+Index: \d+\s+Cnt: \d+\s+Name: (.*?)\s*$/;

/** The text between the first `[` and the last `]` (names may themselves contain brackets). */
function bracketed(value: string): string | null {
  const open = value.indexOf("[");
  const close = value.lastIndexOf("]");
  return open >= 0 && close > open ? value.slice(open + 1, close) : null;
}

function headerValue(line: string, key: string): string | null {
  const m = new RegExp(`^\\s+${key}:\\s+(.*?)\\s*$`).exec(line);
  return m ? m[1] : null;
}

function parseType(text: string): string {
  const known = /^(NONE|REL|EXEC|DYN|CORE) \(/.exec(text);
  if (known) return known[1];
  const hex = /([0-9a-fA-F]+)\)?$/.exec(text);
  return hex ? `0x${hex[1].toLowerCase()}` : text;
}

type State = "none" | "header" | "phdrs" | "dynamic" | "verdef" | "verneed" | "other";

/** Parses the stdout (and stderr) of `readelf -W -h -l -d -V` on one ELF file. */
export function parseReadelf(stdout: string, stderr = "", exitCode = 0): ReadelfInfo {
  const info: ReadelfInfo = {
    class: null,
    endian: null,
    machine: { number: null, name: "" },
    type: null,
    osabi: { number: null, name: "" },
    interpreter: null,
    soname: null,
    needed: [],
    rpath: null,
    runpath: null,
    flags: [],
    flags1: [],
    hasDynamic: false,
    hasSectionHeaders: false,
    versionNeeds: {},
    versionDefs: [],
    warnings: stderr.split("\n").filter((l) => l.trim() !== ""),
    exitCode,
  };
  let state: State = "none";
  let currentNeed: string[] | null = null;
  const needs: Record<string, string[]> = {};
  const defs: string[] = [];

  for (const line of stdout.split("\n")) {
    // Section starts (readelf prints them flush left).
    if (line.startsWith("ELF Header:")) state = "header";
    else if (line.startsWith("Program Headers:")) state = "phdrs";
    else if (line.startsWith(" Section to Segment mapping:")) state = "other";
    else if (line.startsWith("Dynamic section at offset")) state = "dynamic";
    else if (line.startsWith("Version definition section")) state = "verdef";
    else if (line.startsWith("Version needs section")) state = "verneed";
    else if (line.startsWith("Version symbols section")) state = "other";
    else if (/^\S/.test(line)) state = "other";
    else {
      switch (state) {
        case "header": {
          let v: string | null;
          if ((v = headerValue(line, "Magic")) !== null) {
            const bytes = v.split(/\s+/);
            if (bytes.length > 7) {
              const n = parseInt(bytes[7], 16);
              info.osabi = { number: n, name: OSABI_NAMES[n] ?? "" };
            }
          } else if ((v = headerValue(line, "Class")) !== null) {
            info.class = v === "ELF64" ? 64 : v === "ELF32" ? 32 : null;
          } else if ((v = headerValue(line, "Data")) !== null) {
            info.endian = /little endian/.test(v) ? "little" : /big endian/.test(v) ? "big" : null;
          } else if ((v = headerValue(line, "Type")) !== null) {
            info.type = parseType(v);
          } else if ((v = headerValue(line, "Machine")) !== null) {
            const unknown = /^<unknown>: 0x([0-9a-fA-F]+)$/.exec(v);
            const number = unknown ? parseInt(unknown[1], 16) : MACHINES[v];
            info.machine = { number: number ?? null, name: v };
          } else if ((v = headerValue(line, "Number of section headers")) !== null) {
            // `0 (59)` when the real count is in section header 0 (extended numbering).
            const counts = (v.match(/\d+/g) ?? []).map(Number);
            info.hasSectionHeaders = counts.some((c) => c > 0);
          }
          break;
        }
        case "phdrs": {
          const interp = /^\s*\[Requesting program interpreter: (.*)\]\s*$/.exec(line);
          if (interp) info.interpreter = interp[1];
          else if (/^\s+DYNAMIC\s/.test(line)) info.hasDynamic = true;
          break;
        }
        case "dynamic": {
          const m = DYN_LINE.exec(line);
          if (!m) break;
          const [, tag, value] = m;
          if (tag === "NEEDED") info.needed.push(bracketed(value) ?? value);
          else if (tag === "SONAME") info.soname = bracketed(value) ?? value;
          else if (tag === "RPATH") info.rpath = bracketed(value) ?? value;
          else if (tag === "RUNPATH") info.runpath = bracketed(value) ?? value;
          else if (tag === "FLAGS") info.flags = value.trim().split(/\s+/).filter(Boolean);
          else if (tag === "FLAGS_1") {
            info.flags1 = value
              .replace(/^Flags:/, "")
              .trim()
              .split(/\s+/)
              .filter((w) => w !== "" && w !== "None");
          }
          break;
        }
        case "verdef": {
          const m = VERDEF_ENTRY.exec(line);
          if (m) defs.push(m[1]); // `Parent N:` lines are not definitions
          break;
        }
        case "verneed": {
          const file = VERNEED_FILE.exec(line);
          if (file) {
            currentNeed = needs[file[1]] ??= [];
            break;
          }
          const name = VERNEED_NAME.exec(line);
          if (name && currentNeed) currentNeed.push(name[1]);
          break;
        }
        default:
          break;
      }
    }
  }

  // readelf complains on stderr when the section header table is unusable.
  if (info.warnings.some((w) => /section header/i.test(w))) info.hasSectionHeaders = false;
  if (info.hasSectionHeaders) {
    info.versionNeeds = needs;
    info.versionDefs = defs;
  } else {
    info.versionNeeds = null;
    info.versionDefs = null;
  }
  return info;
}

/** Runs `readelf -W -h -l -d -V path` (LC_ALL=C) and parses the output. */
export function readelfInfo(path: string): Promise<ReadelfInfo> {
  return new Promise((resolve, reject) => {
    execFile(
      "readelf",
      ["-W", "-h", "-l", "-d", "-V", path],
      { env: { ...process.env, LC_ALL: "C" }, maxBuffer: 512 * 1024 * 1024, encoding: "utf8" },
      (err, stdout, stderr) => {
        // readelf exits 1 after warnings but still prints what it could; only a failure to run
        // (or an empty report) is an error.
        const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
        if (err && (typeof err.code !== "number" || stdout === "")) {
          reject(new Error(`readelf ${path}: ${err.message}\n${stderr}`));
          return;
        }
        resolve(parseReadelf(stdout, stderr, code));
      },
    );
  });
}
