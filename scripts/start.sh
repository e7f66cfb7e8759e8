#!/bin/sh
# `npm start`: `sliceserve serve` with glibc's malloc advising transparent huge pages for the
# weights (runtime/huge-pages.ts), unless GLIBC_TUNABLES already sets glibc.malloc.hugetlb
# (an explicit choice wins). `exec` replaces this shell with node, so a SIGTERM sent to npm's
# child (a supervisor, `docker stop`) reaches the server and it shuts down gracefully.
case ":${GLIBC_TUNABLES:-}:" in
  *:glibc.malloc.hugetlb=*) ;;
  *)
    GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
    export GLIBC_TUNABLES
    ;;
esac
exec node "$(dirname "$0")/../bin/sliceserve.js" serve "$@"
