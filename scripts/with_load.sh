#!/usr/bin/env bash
# Run a command with busy CPU loops beside it (LOAD_LOOPS, default 2), as on a CI machine that is doing other
# work: a test that passes only on an idle machine fails here. The loops end with the command, whatever happens.
set -u
loops=()
trap 'kill "${loops[@]}" 2>/dev/null' EXIT
for _ in $(seq "${LOAD_LOOPS:-2}"); do
  (while :; do :; done) &
  loops+=($!)
done
"$@"
