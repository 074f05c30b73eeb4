/** ELF constants used by the core, with elf.h names and values. */

// e_ident
export const EI_CLASS: u32 = 4; // File class byte index
export const EI_DATA: u32 = 5; // Data encoding byte index
export const EI_VERSION: u32 = 6; // File version byte index
export const EI_OSABI: u32 = 7; // OS ABI identification
export const ELFCLASS32: u8 = 1; // 32-bit objects
export const ELFCLASS64: u8 = 2; // 64-bit objects
export const ELFDATA2LSB: u8 = 1; // 2's complement, little endian
export const ELFDATA2MSB: u8 = 2; // 2's complement, big endian
export const EV_CURRENT: u8 = 1; // Current version

// e_machine values that change behaviour
export const EM_386: u32 = 3; // Intel 80386 (4 KiB pages)
export const EM_MIPS: u32 = 8; // MIPS R3000 (string-valued processor tags exist)
export const EM_S390: u32 = 22; // IBM S390 (4 KiB pages)
export const EM_X86_64: u32 = 62; // AMD x86-64 (4 KiB pages)

// Program header types
export const PT_LOAD: u32 = 1; // Loadable program segment
export const PT_DYNAMIC: u32 = 2; // Dynamic linking information
export const PT_INTERP: u32 = 3; // Program interpreter
export const PT_NOTE: u32 = 4; // Auxiliary information
export const PT_PHDR: u32 = 6; // Entry for header table itself
export const PT_GNU_PROPERTY: u32 = 0x6474e553; // GNU property notes for linker and run-time loaders
export const PF_X: u32 = 1; // Segment is executable
export const PF_W: u32 = 2; // Segment is writable
export const PF_R: u32 = 4; // Segment is readable
export const PN_XNUM: u32 = 0xffff; // e_phnum overflow marker: real count in section 0's sh_info

// Section header types
export const SHT_PROGBITS: u32 = 1; // Program data
export const SHT_SYMTAB: u32 = 2; // Symbol table
export const SHT_STRTAB: u32 = 3; // String table
export const SHT_HASH: u32 = 5; // Symbol hash table
export const SHT_DYNAMIC: u32 = 6; // Dynamic linking information
export const SHT_NOTE: u32 = 7; // Notes
export const SHT_NOBITS: u32 = 8; // Program space with no data (bss)
export const SHT_DYNSYM: u32 = 11; // Dynamic linker symbol table
export const SHT_GNU_HASH: u32 = 0x6ffffff6; // GNU-style hash table
export const SHT_GNU_VERDEF: u32 = 0x6ffffffd; // Version definition section
export const SHT_GNU_VERNEED: u32 = 0x6ffffffe; // Version needs section
export const SHT_GNU_VERSYM: u32 = 0x6fffffff; // Version symbol table

// Dynamic tags
export const DT_NULL: u64 = 0; // Marks end of dynamic section
export const DT_NEEDED: u64 = 1; // Name of needed library
export const DT_HASH: u64 = 4; // Address of symbol hash table
export const DT_STRTAB: u64 = 5; // Address of string table
export const DT_SYMTAB: u64 = 6; // Address of symbol table
export const DT_STRSZ: u64 = 10; // Size of string table
export const DT_SYMENT: u64 = 11; // Size of one symbol table entry
export const DT_SONAME: u64 = 14; // Name of shared object
export const DT_RPATH: u64 = 15; // Library search path (deprecated)
export const DT_RUNPATH: u64 = 29; // Library search path
export const DT_FLAGS: u64 = 30; // Flags for the object being loaded
export const DT_GNU_HASH: u64 = 0x6ffffef5; // GNU-style hash table
export const DT_CONFIG: u64 = 0x6ffffefa; // Configuration information
export const DT_DEPAUDIT: u64 = 0x6ffffefb; // Dependency auditing
export const DT_AUDIT: u64 = 0x6ffffefc; // Object auditing
export const DT_VERSYM: u64 = 0x6ffffff0; // Address of the symbol version index table
export const DT_FLAGS_1: u64 = 0x6ffffffb; // State flags
export const DT_VERDEF: u64 = 0x6ffffffc; // Address of version definition table
export const DT_VERDEFNUM: u64 = 0x6ffffffd; // Number of version definitions
export const DT_VERNEED: u64 = 0x6ffffffe; // Address of table with needed versions
export const DT_VERNEEDNUM: u64 = 0x6fffffff; // Number of needed versions
export const DT_AUXILIARY: u64 = 0x7ffffffd; // Shared object to load before self
export const DT_FILTER: u64 = 0x7fffffff; // Shared object to get values from
export const DT_MIPS_RLD_MAP_REL: u64 = 0x70000035; // Address of run-time debug map, relative to this entry

export const STT_SECTION: u32 = 3; // Symbol associated with a section

export const VER_NDX_GLOBAL: u32 = 1; // Symbol is global (unversioned)

export const DF_1_NODEFLIB: u64 = 0x800; // Ignore default lib search path

/** Returns whether a dynamic tag's value is an offset into `DT_STRTAB`. */
export function isStringTag(tag: u64): bool {
  return tag == DT_NEEDED || tag == DT_SONAME || tag == DT_RPATH || tag == DT_RUNPATH ||
    tag == DT_AUXILIARY || tag == DT_FILTER || tag == DT_CONFIG || tag == DT_DEPAUDIT || tag == DT_AUDIT;
}
