#!/usr/bin/env bash
# The longer crash matrix (not in CI's time budget): bangerd SIGKILLed at every stage of an
# image pull, a workspace prepare and a fork, on the QEMU backend in a network namespace;
# after each kill the next daemon must leave a consistent host (see
# `e2e_crash_matrix_pull_workspace_fork`). CI runs the create/start/stop/delete part
# (`e2e_crash_at_every_stage_of_create_start_stop_delete`); this script runs both and prints
# how many points were killed. Run as root after `scripts/test.sh` prepared the kernel and image.
set -euo pipefail
cd "$(dirname "$0")/.."
export BANGER_E2E_HOME=${BANGER_E2E_HOME:-/var/tmp/banger-e2e-home}
export BANGER_REQUIRE_PRIVILEGED=1
cargo build --workspace --bins --locked >&2
cargo nextest run -p banger-cli --locked --run-ignored all --no-capture \
  -E 'test(e2e_crash_at_every_stage_of_create_start_stop_delete) | test(e2e_crash_matrix_pull_workspace_fork)' \
  2>&1 | tee /dev/stderr | grep -E '^crash (harness|matrix):'
