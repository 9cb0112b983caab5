#!/usr/bin/env bash
# What two of PostgreSQL's per-row costs were (migrations 0046 and 0047),
# measured on this build's schema in a throwaway server: 100,000 rows
# inserted in statements of 256 rows (the planner's batches), alternating,
# ROUNDS rounds (2), the server's time per 100,000 rows.
#
#   - step records with the foreign key to their enrollment that migration
#     0046 dropped, and without it (the table as it is);
#   - outbox rows with migration 0026's `kind` expression (every payload
#     checked by a PL/pgSQL function with an exception block, a
#     subtransaction per row), and with migration 0047's (the table as it
#     is: payloads that cannot name a kind are not parsed).
#
#   bench/pg_row_writes.sh
#   BIN=/path/nurture ROUNDS=3 bench/pg_row_writes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [[ -z "${NURTURE_TEST_POSTGRES:-}" ]]; then
    exec .ci/with-postgres.sh "$0" "$@"
fi
ROUNDS="${ROUNDS:-2}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${BIN:-$TARGET/release/nurture}"
[[ -x "$BIN" ]] || cargo build --release --locked --bin nurture >&2
OUT="$ROOT/bench/out/pg_row_writes"
rm -rf "$OUT"; mkdir -p "$OUT"
DB="${NURTURE_TEST_POSTGRES%/*}/row_writes"
psql -q "$NURTURE_TEST_POSTGRES" -c "DROP DATABASE IF EXISTS row_writes" -c "CREATE DATABASE row_writes"
printf 'database: %s\n' "$DB" >"$OUT/nurture.yaml"
NURTURE_LOG=warn "$BIN" --config "$OUT/nurture.yaml" status >/dev/null

psql -q -v ON_ERROR_STOP=1 "$DB" <<'SQL'
INSERT INTO enrollments (workflow, contact_id, entry_key, status, started_at, ended_at)
SELECT 'welcome', 'c' || g, '', 'done', g, g FROM generate_series(1, 2000000) g;
VACUUM ANALYZE enrollments;
CREATE TABLE steps_with_key (LIKE enrollment_steps INCLUDING ALL);
ALTER TABLE steps_with_key ADD FOREIGN KEY (enrollment_id) REFERENCES enrollments (id) ON DELETE CASCADE;
CREATE TABLE outbox_0026 (LIKE outbox INCLUDING DEFAULTS INCLUDING INDEXES INCLUDING CONSTRAINTS);
ALTER TABLE outbox_0026 DROP COLUMN kind;
ALTER TABLE outbox_0026 ADD COLUMN kind TEXT NOT NULL GENERATED ALWAYS AS (
    coalesce(CASE WHEN nurture_is_json_object(payload) THEN payload::jsonb ->> 'kind' END, 'message')
) STORED;
SQL

# seconds TABLE KIND FIRST: 100,000 rows from id FIRST on, 256 a statement.
seconds() {
    local table=$1 kind=$2 first=$3 insert
    if [[ $kind == steps ]]; then
        insert="INSERT INTO $table (enrollment_id, step_id, ran_at, action, workflow, started_at)
                SELECT g, 'send', g, 'send', 'welcome', g FROM generate_series(b, b + 255) g;"
    else
        insert="INSERT INTO $table (id, workflow, contact_id, enrollment_id, step_id, channel, recipient,
                                    body, payload, status, not_before, next_attempt_at, created_at)
                SELECT 'welcome:' || g || ':send', 'welcome', 'c' || g, g, 'send', 'hook', 'http://x',
                       'Welcome, Name ' || g || '! Your account is ready.',
                       '{\"contact\":{\"id\":\"c' || g || '\",\"name\":\"Name\"}}', 'sending', g, g, g
                  FROM generate_series(b, b + 255) g;"
    fi
    psql -Atq -v ON_ERROR_STOP=1 "$DB" <<SQL | tail -n1
DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); b bigint;
BEGIN
    FOR i IN 0..390 LOOP b := $first + i * 256; $insert END LOOP;
    RAISE NOTICE '%', round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2);
END \$\$;
SQL
}

{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), load before $(awk '{ print $1 }' /proc/loadavg)"
    echo
    echo "| rows | before | s per 100,000 | now | s per 100,000 |"
    echo "|---|---|---:|---|---:|"
} | tee "$OUT/results.md"
first=1
for r in $(seq 1 "$ROUNDS"); do
    a=$(seconds steps_with_key steps "$first" 2>&1 | sed 's/.*NOTICE: *//')
    b=$(seconds enrollment_steps steps "$first" 2>&1 | sed 's/.*NOTICE: *//')
    echo "| step records | with the foreign key | $a | without (0046) | $b |" | tee -a "$OUT/results.md"
    c=$(seconds outbox_0026 outbox "$first" 2>&1 | sed 's/.*NOTICE: *//')
    d=$(seconds outbox outbox "$first" 2>&1 | sed 's/.*NOTICE: *//')
    echo "| outbox rows | kind as in 0026 | $c | kind as in 0047 | $d |" | tee -a "$OUT/results.md"
    first=$((first + 100096))
done
