/** Display names for ELF numbers (machine, OS ABI, type, DT_FLAGS and DT_FLAGS_1 bits). */

const MACHINES: Record<number, string> = {
  0: "none", 2: "sparc", 3: "i386", 4: "m68k", 8: "mips", 10: "mips_rs3_le", 15: "parisc", 18: "sparc32plus",
  20: "ppc", 21: "ppc64", 22: "s390", 40: "arm", 42: "sh", 43: "sparcv9", 50: "ia64", 62: "x86_64",
  183: "aarch64", 243: "riscv", 247: "bpf", 258: "loongarch", 0x9026: "alpha",
};

const OSABIS: Record<number, string> = {
  0: "SYSV", 1: "HPUX", 2: "NetBSD", 3: "GNU", 6: "Solaris", 7: "AIX", 8: "IRIX", 9: "FreeBSD",
  10: "TRU64", 11: "Modesto", 12: "OpenBSD", 64: "ARM_AEABI", 97: "ARM", 255: "Standalone",
};

const TYPES: Record<number, string> = { 0: "NONE", 1: "REL", 2: "EXEC", 3: "DYN", 4: "CORE" };

// DT_FLAGS bits, elf.h DF_* order.
const FLAGS = ["ORIGIN", "SYMBOLIC", "TEXTREL", "BIND_NOW", "STATIC_TLS"];

// DT_FLAGS_1 bits, elf.h DF_1_* order, with readelf's spelling.
const FLAGS_1 = [
  "NOW", "GLOBAL", "GROUP", "NODELETE", "LOADFLTR", "INITFIRST", "NOOPEN", "ORIGIN", "DIRECT", "TRANS",
  "INTERPOSE", "NODEFLIB", "NODUMP", "CONFALT", "ENDFILTEE", "DISPRELDNE", "DISPRELPND", "NODIRECT",
  "IGNMULDEF", "NOKSYMS", "NOHDR", "EDITED", "NORELOC", "SYMINTPOSE", "GLOBAUDIT", "SINGLETON", "STUB",
  "PIE", "KMOD", "WEAKFILTER", "NOCOMMON",
];

export function machineName(n: number): string {
  return MACHINES[n] ?? `EM_${n}`;
}

export function osabiName(n: number): string {
  return OSABIS[n] ?? `OSABI_${n}`;
}

export function typeName(n: number): string {
  return TYPES[n] ?? `0x${n.toString(16)}`;
}

function bitNames(value: number, names: string[]): string[] {
  const out: string[] = [];
  // Values are at most 2^53 in f64; DT_FLAGS bits of interest are in the low 32.
  const lo = value >>> 0;
  for (let bit = 0; bit < 32; bit++) {
    if ((lo >>> bit) & 1) out.push(names[bit] ?? `0x${(1 << bit >>> 0).toString(16)}`);
  }
  const hi = Math.floor(value / 2 ** 32);
  if (hi) out.push(`0x${hi.toString(16)}00000000`);
  return out;
}

export const flagsNames = (v: number): string[] => bitNames(v, FLAGS);
export const flags1Names = (v: number): string[] => bitNames(v, FLAGS_1);
