/**
 * The one place that defines host error codes and messages. Core statuses map to `ELF_*` codes
 * through STATUS_TABLE; host failures use `IO_*`, `CLI_*`, `POOL_*` and `INTERNAL`.
 * Messages are static and grammatical; the path goes in a field, never into the sentence.
 */
import { Status } from "./shared/status.js";

export const ErrorCode = {
  ELF_BAD_MAGIC: "ELF_BAD_MAGIC",
  ELF_BAD_CLASS: "ELF_BAD_CLASS",
  ELF_BAD_ENDIAN: "ELF_BAD_ENDIAN",
  ELF_BAD_VERSION: "ELF_BAD_VERSION",
  ELF_TRUNCATED: "ELF_TRUNCATED",
  ELF_BAD_PROGRAM_HEADERS: "ELF_BAD_PROGRAM_HEADERS",
  ELF_BAD_SECTION_HEADERS: "ELF_BAD_SECTION_HEADERS",
  ELF_BAD_DYNAMIC: "ELF_BAD_DYNAMIC",
  ELF_BAD_STRING_TABLE: "ELF_BAD_STRING_TABLE",
  ELF_BAD_VERSION_TABLE: "ELF_BAD_VERSION_TABLE",
  ELF_BAD_SYMBOL_TABLE: "ELF_BAD_SYMBOL_TABLE",
  ELF_UNMAPPED_ADDRESS: "ELF_UNMAPPED_ADDRESS",
  ELF_TOO_LARGE: "ELF_TOO_LARGE",
  ELF_NO_DYNAMIC: "ELF_NO_DYNAMIC",
  ELF_NO_ROOM: "ELF_NO_ROOM",
  ELF_NO_INTERPRETER: "ELF_NO_INTERPRETER",
  ELF_BAD_INTERPRETER: "ELF_BAD_INTERPRETER",
  ELF_TRAILING_DATA: "ELF_TRAILING_DATA",
  RESOLVE_BAD_CACHE: "RESOLVE_BAD_CACHE",
  IO_OPEN: "IO_OPEN",
  IO_READ: "IO_READ",
  IO_WRITE: "IO_WRITE",
  IO_NOT_FILE: "IO_NOT_FILE",
  IO_CHANGED: "IO_CHANGED",
  IO_IN_USE: "IO_IN_USE",
  IO_PATH_ENCODING: "IO_PATH_ENCODING",
  CLI_USAGE: "CLI_USAGE",
  POOL_WORKER_CRASHED: "POOL_WORKER_CRASHED",
  INTERNAL: "INTERNAL",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** A plain, cloneable error description attached to a file record. */
export interface ErrorRecord {
  code: ErrorCode;
  message: string;
}

/** Status -> [code, message]. `Ok` and `NeedRange` are not errors and have no entry. */
const STATUS_TABLE: Record<number, [ErrorCode, string]> = {
  [Status.BadMagic]: [ErrorCode.ELF_BAD_MAGIC, "Not an ELF file (bad magic)"],
  [Status.BadClass]: [ErrorCode.ELF_BAD_CLASS, "Unsupported ELF class"],
  [Status.BadEndian]: [ErrorCode.ELF_BAD_ENDIAN, "Unsupported ELF endian"],
  [Status.BadVersion]: [ErrorCode.ELF_BAD_VERSION, "Unsupported ELF version"],
  [Status.Truncated]: [ErrorCode.ELF_TRUNCATED, "ELF file is truncated"],
  [Status.BadProgramHeaders]: [ErrorCode.ELF_BAD_PROGRAM_HEADERS, "Invalid ELF program header table"],
  [Status.BadSectionHeaders]: [ErrorCode.ELF_BAD_SECTION_HEADERS, "Invalid ELF section header table"],
  [Status.BadDynamic]: [ErrorCode.ELF_BAD_DYNAMIC, "Invalid ELF dynamic table data"],
  [Status.BadStringTable]: [ErrorCode.ELF_BAD_STRING_TABLE, "Invalid ELF dynamic string table"],
  [Status.BadVersionTable]: [ErrorCode.ELF_BAD_VERSION_TABLE, "Invalid ELF symbol version table"],
  [Status.BadSymbolTable]: [ErrorCode.ELF_BAD_SYMBOL_TABLE, "Invalid ELF dynamic symbol table"],
  [Status.UnmappedAddress]: [ErrorCode.ELF_UNMAPPED_ADDRESS, "ELF dynamic address is not in any loaded segment"],
  [Status.TooLarge]: [ErrorCode.ELF_TOO_LARGE, "ELF table is too large"],
  [Status.NoDynamic]: [ErrorCode.ELF_NO_DYNAMIC, "No ELF dynamic section; can't edit dynamic entries"],
  [Status.NoRoom]: [ErrorCode.ELF_NO_ROOM, "Not enough room in the file; can't apply the edit in place"],
  [Status.NoInterpreter]: [ErrorCode.ELF_NO_INTERPRETER, "No ELF program interpreter; can't set it"],
  [Status.BadRequest]: [ErrorCode.INTERNAL, "Malformed edit request"],
  [Status.BadInterpreter]: [ErrorCode.ELF_BAD_INTERPRETER, "Invalid ELF program interpreter"],
  [Status.TrailingData]: [
    ErrorCode.ELF_TRAILING_DATA,
    "The file carries data after its ELF contents (an appended archive?); growing it would move that data off the end of the file",
  ],
};

export function statusToError(status: number): ErrorRecord {
  const entry = STATUS_TABLE[status];
  if (!entry) return { code: ErrorCode.INTERNAL, message: `Unknown core status ${status}` };
  return { code: entry[0], message: entry[1] };
}

/** A host error with a code from the table. The only Error subclass the host throws. */
export class ElfPatchError extends Error {
  override readonly name = "ElfPatchError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: { path?: string | undefined; cause?: unknown } = {},
  ) {
    super(message, { cause: details.cause });
  }
  toRecord(): ErrorRecord {
    return { code: this.code, message: this.message };
  }
}

/**
 * A system error the user can act on, explained: an ElfPatchError `lead: ERRNO: why; the file was
 * not changed` when `why` has a reason for its errno code (a string: for any code); anything else
 * is returned as it is.
 */
export function explained(err: unknown, code: ErrorCode, lead: string, why: string | Readonly<Record<string, string>>): unknown {
  const errno = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof errno !== "string") return err;
  const reason = typeof why === "string" ? why : why[errno];
  if (reason === undefined) return err;
  return new ElfPatchError(code, `${lead}: ${errno}: ${reason}; the file was not changed`, { cause: err });
}

/** Converts anything thrown during one file's processing into an error record. */
export function toErrorRecord(err: unknown): ErrorRecord {
  if (err instanceof ElfPatchError) return err.toRecord();
  const e = err as NodeJS.ErrnoException | undefined;
  if (e && typeof e.code === "string" && typeof e.syscall === "string") {
    const opening = ["open", "lstat", "stat", "realpath", "access", "scandir"].includes(e.syscall);
    const code = opening ? ErrorCode.IO_OPEN : e.syscall === "read" ? ErrorCode.IO_READ : ErrorCode.IO_WRITE;
    return { code, message: `${e.syscall} failed: ${e.code}` };
  }
  return { code: ErrorCode.INTERNAL, message: err instanceof Error ? err.message : String(err) };
}
