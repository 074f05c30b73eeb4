/**
 * Status codes returned by every export of the Wasm core. This one file is compiled by both asc
 * (assembly/) and tsc (src/). Adding a member means adding its message and error code in
 * `src/errors.ts` (STATUS_TABLE) and a test, in the same change.
 */
export enum Status {
  /** Success. */
  Ok = 0,
  /** The core needs more bytes of the file: read `needOff()`/`needLen()` and call again. */
  NeedRange = 1,
  /** The file does not start with `\x7fELF`. */
  BadMagic = 2,
  /** `EI_CLASS` is neither ELFCLASS32 nor ELFCLASS64. */
  BadClass = 3,
  /** `EI_DATA` is neither ELFDATA2LSB nor ELFDATA2MSB. */
  BadEndian = 4,
  /** `EI_VERSION` or `e_version` is not EV_CURRENT. */
  BadVersion = 5,
  /** A structure extends past the end of the file. */
  Truncated = 6,
  /** The program header table is invalid (entry size, count or position). */
  BadProgramHeaders = 7,
  /** The section header table is invalid (only fatal where an edit needs it). */
  BadSectionHeaders = 8,
  /** `PT_DYNAMIC` or the dynamic array is invalid (size, position, no terminator, several PT_DYNAMIC). */
  BadDynamic = 9,
  /** `DT_STRTAB`/`DT_STRSZ` are missing, unmapped or out of bounds, or a string is unterminated. */
  BadStringTable = 10,
  /** The symbol version tables (`DT_VERNEED`/`DT_VERDEF`) are invalid or loop. */
  BadVersionTable = 11,
  /** The dynamic symbol table is invalid (size, entry size, or hash table). */
  BadSymbolTable = 12,
  /** An address in the dynamic section is not inside any `PT_LOAD` with file bytes. */
  UnmappedAddress = 13,
  /** A table is larger than the core accepts (hostile counts). */
  TooLarge = 14,
  /** The file has no `PT_DYNAMIC`, and the requested edit needs one. */
  NoDynamic = 15,
  /** The requested edit does not fit in the space the file already has (needs growth). */
  NoRoom = 16,
  /** The file has no `PT_INTERP`, and the requested edit needs one. */
  NoInterpreter = 17,
  /** The edit request given to the core is malformed (a host bug). */
  BadRequest = 18,
  /** `PT_INTERP` is invalid (size, position or terminator). */
  BadInterpreter = 19,
  /**
   * The file has data after everything its headers describe (an appended archive or payload, as
   * PyInstaller and self-extracting programs carry), and the edit needs a new segment at the end.
   */
  TrailingData = 20,
}
