#!/bin/sh
# The `elfpatch` command (package.json "bin"; the build copies this to build/bin/elfpatch): runs
# the CLI, build/js/cli/main.js, with node.
#
# NODE_EXTRA_CA_CERTS is dropped: node 20 reads and parses that certificate bundle at every start
# (35 ms of a 57 ms empty start on the bench machine, whose environment sets it), and elfpatch
# makes no TLS connection. Everything else of the environment is passed on.
#
# With --json, the main thread resolves every file's load tree after a patch, and V8 would let its
# young generation grow to 3 x 16 MB for that: capped at 4 MB semi-spaces, the peak RSS of a
# 3,156-file patch --json went from 161-168 MB to 131-145 MB. (A V8 flag on node's command line
# costs node its startup code cache, 15-35 ms: only for --json, which takes seconds anyway.)
#
# glibc's malloc keeps freed memory at the top of its heap up to a threshold that it raises as
# large blocks come and go (to 64 MiB): a batch that reads and drops many buffers then keeps tens
# of MB it no longer uses. A fixed 64 KiB threshold (which also keeps blocks of 128 KiB and more
# in mappings of their own, returned at free) cut the peak RSS of a 3,156-file in-place patch from
# 129-147 MB to 123-129 MB at the same speed. A value the caller set is kept.
unset NODE_EXTRA_CA_CERTS
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-65536}"
# Where main.js is, with shell builtins only unless the command is a symlink (as npm's
# node_modules/.bin makes it): readlink and dirname would cost two more processes per run.
self=$0
if [ -L "$self" ]; then self=$(readlink -f "$self" 2>/dev/null) || self=$0; fi
case $self in
  */*) main="${self%/*}/../js/cli/main.js" ;;
  *) main="../js/cli/main.js" ;;
esac
for arg in "$@"; do
  if [ "$arg" = "--json" ]; then exec node --max-semi-space-size=4 "$main" "$@"; fi
done
exec node "$main" "$@"
