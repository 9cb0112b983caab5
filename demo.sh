#!/usr/bin/env bash
# The quick start: build nurture, load the 3,000 sample contacts into
# nurture.db, and show what the example workflows would do at a fixed time.
# Every channel in nurture.yaml is `kind: log`: nothing is sent anywhere.
#
#   ./demo.sh                               # at 2026-11-01T10:00:00+08:00
#   ./demo.sh 2026-11-02T10:00:00+08:00     # at another time
set -euo pipefail
cd "$(dirname "$0")"

AT="${1:-2026-11-01T10:00:00+08:00}"
cargo build --release --locked
nurture="${CARGO_TARGET_DIR:-target}/release/nurture"

"$nurture" validate
"$nurture" contacts import contacts/sample.csv     # an upsert: running it again changes nothing
"$nurture" dry-run --at "$AT" --format table
