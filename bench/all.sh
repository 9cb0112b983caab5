#!/usr/bin/env bash
# Every speed figure of BENCHMARKS.md's issue 13 and 14 sections, in one
# command, each side by side with its peers in the same run:
#
#   1. import and dry-run, SQLite and PostgreSQL, against sqlite3 / psql
#      running the same SELECT (bench/side_by_side.sh, N contacts);
#   2. end to end: nurture on SQLite and on PostgreSQL, the Python peer
#      (bench/peer.py) and wrk against the same receiver (bench/e2e.sh PG=1,
#      100,000 contacts);
#      and where PostgreSQL's time goes in that run, by statement
#      (bench/pg_statements.sh), and two per-row costs it no longer pays
#      (bench/pg_row_writes.sh);
#   3. delivery alone against wrk (bench/delivery.sh compare, 100,000 queued);
#   4. a journey's dry-run and `nurture report` over N enrollments, SQLite and
#      PostgreSQL (bench/journey.sh, bench/journey-pg.sh);
#   5. with SCALE=1, the ten-million-contact story on PostgreSQL
#      (bench/scale.sh, about an hour on 2 CPUs).
#
#   bench/all.sh                 # N = 1,000,000
#   bench/all.sh 100000          # a quicker look
#   BASE=/path/to/old/nurture bench/all.sh   # an older build in the same rounds
#
# ROUNDS (3) and BASE go to every script. Needs what the scripts need:
# sqlite3, GNU time, python3 (a venv for the peer is made from PyPI), curl,
# wrk; PostgreSQL comes from .ci/with-postgres.sh (installed from Debian's
# packages when missing). Each script appends its table to its own
# bench/out/*/results file and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
export ROUNDS="${ROUNDS:-3}"

echo "== build (release: nurture and the bench receiver)" >&2
cargo build --release --locked --bin nurture --example bench_receiver --example bench_load >&2

echo "== 1. import and dry-run, both stores" >&2
bench/side_by_side.sh "$N"
echo "== 2. end to end, both stores, the Python peer, wrk" >&2
PG=1 bench/e2e.sh
bench/pg_statements.sh
bench/pg_row_writes.sh
echo "== 3. delivery alone against wrk" >&2
bench/delivery.sh compare
echo "== 4. a journey's dry-run and report, both stores" >&2
bench/journey.sh "$N"
.ci/with-postgres.sh bench/journey-pg.sh "$N"
if [[ -n "${SCALE:-}" ]]; then
    echo "== 5. ten million contacts on PostgreSQL" >&2
    bench/scale.sh
fi
