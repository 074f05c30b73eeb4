#!/bin/sh
# The `elfpatch` command (package.json "bin"; the build copies this to build/bin/elfpatch): runs
# the CLI, build/js/cli/main.js, with node.
#
# NODE_EXTRA_CA_CERTS is dropped: node 20 reads and parses that certificate bundle at every start
# (35 ms of a 57 ms empty start on the bench machine, whose environment sets it), and elfpatch
# makes no TLS connection. Everything else of the environment is passed on.
unset NODE_EXTRA_CA_CERTS
self=$(readlink -f "$0" 2>/dev/null) || self=$0
exec node "$(dirname "$self")/../js/cli/main.js" "$@"
