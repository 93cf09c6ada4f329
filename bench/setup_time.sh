#!/bin/bash
# Set-up time of `make run` and `make test` (their installs) from an empty venv with a
# warm pip cache, in a scratch worktree so no shared venv is touched:
#
#   git worktree add --detach /tmp/mimiverse-scratch HEAD
#   bench/setup_time.sh /tmp/mimiverse-scratch
#
# Prints one line per target with its wall time; each run starts from no .venv at all.
set -u
scratch=${1:?usage: bench/setup_time.sh SCRATCH_WORKTREE}
cd "$scratch" || exit 1
unset PYTHONPATH
for targets in "install-run" "install-test install-triton"; do
    rm -rf .venv .venv-triton
    start=$(date +%s.%N)
    make $targets > "setup-$(echo "$targets" | tr ' ' '+').log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    printf 'make %s: exit %d, %.0f s\n' "$targets" "$rc" "$(echo "$end - $start" | bc)"
done
