#!/usr/bin/env bash
# Builds the cross-architecture libc corpus used by test/integration/corpus.test.ts.
#
# Downloads a few Debian libc packages for other architectures (32/64-bit, little/big endian)
# and unpacks them under $ELFPATCH_CORPUS_DIR/cross/<pkg>/ (default <repo>/.cache/corpus).
# Idempotent: packages already unpacked (marker file present) are skipped.
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

# Count regular files starting with the ELF magic.
count=0
while IFS= read -r -d '' f; do
  if [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; then
    count=$((count + 1))
  fi
done < <(find "$cross" -type f ! -name .extracted -print0)
echo "corpus: $count ELF files under $cross"
