#!/usr/bin/env bash
# The delivery benchmark: the daemon (`nurture run`) sending webhooks to a fast
# loopback receiver (examples/bench_receiver.rs), release build.
#
#   bench/delivery.sh                 # all three measurements
#   bench/delivery.sh throughput      # (a) only; also: latency, idle
#   bench/delivery.sh stores          # (d) only: SQLite vs PostgreSQL, 1-3 daemons
#   BASE=/path/nurture bench/delivery.sh compare   # (a3): delivery alone, this build vs BASE vs wrk
#   CONCURRENCY=128 bench/delivery.sh compare       # the same with the channel's concurrency at 128
#
# (a) throughput: N contacts (default 100,000; env N) imported, a
#     contact_created workflow sending one webhook each, `nurture run
#     --until-idle`; messages/s = messages / (last receipt - first receipt).
# (b) latency: the daemon running, examples/bench_load.rs creating contacts
#     with POST /v1/contacts at RATE/s (default 500) for SECONDS (default 20);
#     time from just before each POST to the receiver seeing its welcome
#     message, p50/p90/p99/max.
# (c) idle memory: the quick-start project (nurture.yaml, workflows/,
#     templates/, segments/, contact_ways/ and contacts/sample.csv of the
#     repository, copied), daemon
#     started, VmRSS from /proc/PID/status after IDLE_S seconds (default 5).
#
# (d) stores: delivery alone (as a2) of M messages (default 50,000; env M)
#     already queued, on SQLite with one daemon and on PostgreSQL with one,
#     two and three daemons (`run --until-idle` each; they share the outbox
#     through SKIP LOCKED claims). Contacts and outbox rows are written with
#     SQL, the event-log cursor past them, so only delivery is measured.
#     PostgreSQL is a throwaway server from .ci/with-postgres.sh (the script
#     re-runs itself under it).
#
# Everything goes to bench/out/delivery/ (gitignored); a markdown summary is
# printed and appended to bench/out/delivery/results.md.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WHAT="${1:-all}"
if [[ ("$WHAT" == all || "$WHAT" == stores) && -z "${NURTURE_BENCH_PG:-}" ]]; then
    export NURTURE_BENCH_PG=1
    exec .ci/with-postgres.sh "$0" "$@"
fi
M="${M:-50000}"
N="${N:-100000}"
RATE="${RATE:-500}"
SECONDS_LOAD="${SECONDS_LOAD:-20}"
IDLE_S="${IDLE_S:-5}"
OUT="$ROOT/bench/out/delivery"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release/nurture"
RECEIVER="$TARGET/release/examples/bench_receiver"
LOAD="$TARGET/release/examples/bench_load"
TOKEN=bench-token
export NURTURE_API_TOKEN=$TOKEN
unset NURTURE_DATABASE
export NURTURE_LOG="${NURTURE_LOG:-warn}"

for tool in python3 sqlite3 curl; do
    command -v "$tool" >/dev/null || { echo "bench: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
[[ -x /usr/bin/time ]] || { echo "bench: needs GNU time (apt-get install time)" >&2; exit 2; }

mkdir -p "$OUT"
echo "== build" >&2
cargo build --release --locked --bin nurture --example bench_receiver --example bench_load >&2

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# Starts "$@" in the background with stdout to $1.out; waits for its
# "listening on ADDR" line; sets ADDR and PID.
source bench/lib.sh   # (the script runs from the repository root)

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# A project in $1 whose one workflow sends a webhook to every new contact
# (bench/lib.sh's end-to-end project, without contacts); $2 is the receiver.
# CONCURRENCY=N sets the channel's `concurrency` (default: nurture's, 64).
webhook_project() {
    welcome_project "$1" "sqlite://nurture.db" "$2" 0
    if [[ -n "${CONCURRENCY:-}" ]]; then
        echo "    concurrency: $CONCURRENCY" >>"$1/nurture.yaml"
    fi
}

start_listening receiver "$RECEIVER" 127.0.0.1:0
RECV="http://$ADDR"
RECV_PID=$PID
echo "== receiver at $RECV" >&2

if COMMIT=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD -- src Cargo.toml Cargo.lock || COMMIT="$COMMIT+dirty"
else
    COMMIT="${BENCH_COMMIT:-unknown (not a git checkout)}"
fi
RESULT="$OUT/results.md"
{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ) commit $COMMIT, $(nproc) CPUs, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$RESULT"

# --- (a) sustained throughput ----------------------------------------------
if [[ "$WHAT" == all || "$WHAT" == throughput ]]; then
    P="$OUT/throughput"
    webhook_project "$P" "$RECV"
    echo "== (a) generate and import $N contacts" >&2
    python3 - "$N" >"$P/contacts.csv" <<'EOF'
import sys
n = int(sys.argv[1])
print("id,name,email")
for i in range(n):
    print(f"t{i:07},Name {i},t{i:07}@example.com")
EOF
    # The daemon first sees (activates) the workflow on the empty store, so
    # the contacts imported next are news to it: contacts imported before a
    # workflow's activation do not enter it (the run would send nothing).
    "$BIN" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 >"$OUT/activate.out" 2>&1
    "$BIN" --config "$P/nurture.yaml" contacts import "$P/contacts.csv" >"$OUT/import.log" 2>&1
    curl -s -X POST "$RECV/reset" >/dev/null
    echo "== (a) nurture run --until-idle" >&2
    /usr/bin/time -v -o "$OUT/time.throughput" \
        "$BIN" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 \
        >"$OUT/throughput.out" 2>"$OUT/throughput.err"
    stats=$(curl -s "$RECV/stats")
    count=$(echo "$stats" | json '["count"]')
    unique=$(echo "$stats" | json '["unique"]')
    span=$(echo "$stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("%.3f" % ((s["last_us"]-s["first_us"])/1e6))')
    rate=$(awk -v n="$count" -v s="$span" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }')
    wall=$(awk '/Elapsed \(wall clock\)/ { print $NF }' "$OUT/time.throughput" |
        awk -F: '{ if (NF == 3) printf "%.2f", $1*3600+$2*60+$3; else printf "%.2f", $1*60+$2 }')
    peak=$(awk '/Maximum resident set size/ { printf "%.0f", $NF / 1024 }' "$OUT/time.throughput")
    cpu=$(awk -F: '/Percent of CPU/ { gsub(/ /, "", $2); print $2 }' "$OUT/time.throughput")
    sent=$(python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(\"select count(*) from outbox where status='sent'\").fetchone()[0])" "$P/nurture.db")
    {
        echo
        echo "(a) throughput, $N contacts: $count requests ($unique distinct message ids; $sent outbox rows sent) in ${span} s from first to last receipt = **$rate messages/s**; daemon wall ${wall} s (planning included), peak RSS ${peak} MB, CPU $cpu"
    } | tee -a "$RESULT"

    # (a2) delivery alone: the same 100,000 outbox rows queued again (the
    # enrollments are done and the event log consumed, so the scheduler has
    # nothing to plan), then `run --until-idle` once more.
    sqlite3 "$P/nurture.db" "UPDATE outbox SET status = 'queued', sent_at = NULL, attempts = 0, next_attempt_at = 0,
                                   lease_owner = NULL, lease_until = NULL, provider_id = NULL"
    curl -s -X POST "$RECV/reset" >/dev/null
    echo "== (a2) delivery only: nurture run --until-idle over a full outbox" >&2
    /usr/bin/time -v -o "$OUT/time.delivery-only" \
        "$BIN" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 \
        >"$OUT/delivery-only.out" 2>"$OUT/delivery-only.err"
    stats=$(curl -s "$RECV/stats")
    count=$(echo "$stats" | json '["count"]')
    span=$(echo "$stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("%.3f" % ((s["last_us"]-s["first_us"])/1e6))')
    rate=$(awk -v n="$count" -v s="$span" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }')
    cpu=$(awk -F: '/Percent of CPU/ { gsub(/ /, "", $2); print $2 }' "$OUT/time.delivery-only")
    peak=$(awk '/Maximum resident set size/ { printf "%.0f", $NF / 1024 }' "$OUT/time.delivery-only")
    {
        echo
        echo "(a2) delivery only, $count messages already in the outbox: ${span} s from first to last receipt = **$rate messages/s**, peak RSS ${peak} MB, CPU $cpu"
    } | tee -a "$RESULT"
fi

# --- (a3) delivery alone, side by side: this build, BASE, wrk -----------------
# BASE=/path/to/nurture ROUNDS=3 bench/delivery.sh compare
# Each build gets its own store of N queued messages (made as in (a)); every
# round sets it back to queued (a copy of the file), runs `run --until-idle`
# under GNU time with each build in turn, then wrk for WRK_S seconds against
# the same receiver. Reported: msg/s at the receiver, CPU seconds of the
# daemon per 100,000 messages (user + sys; less noisy than the rate on a
# loaded machine) and the load average before each run.
if [[ "$WHAT" == compare ]]; then
    ROUNDS="${ROUNDS:-3}"
    WRK_S="${WRK_S:-5}"
    command -v wrk >/dev/null || { echo "bench: needs wrk (apt-get install wrk)" >&2; exit 2; }
    cat >"$OUT/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"message_id":"m","workflow":"welcome","contact_id":"t0000001","to":"t0000001@example.com","subject":null,"body":"Welcome, Name 1! Your account t0000001 is ready.","contact":{"id":"t0000001","name":"Name 1"}}'
LUA
    python3 - "$N" >"$OUT/contacts.csv" <<'EOF2'
import sys
n = int(sys.argv[1])
print("id,name,email")
for i in range(n):
    print(f"t{i:07},Name {i},t{i:07}@example.com")
EOF2
    WHO=(new)
    declare -A BINS=([new]="$BIN")
    if [[ -n "${BASE:-}" ]]; then WHO+=(base); BINS[base]="$BASE"; fi
    for who in "${WHO[@]}"; do
        P="$OUT/compare-$who"
        webhook_project "$P" "$RECV"
        b=${BINS[$who]}
        "$b" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 >/dev/null 2>&1
        "$b" --config "$P/nurture.yaml" contacts import "$OUT/contacts.csv" >/dev/null 2>&1
        "$b" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 >/dev/null 2>&1
        sqlite3 "$P/nurture.db" "PRAGMA wal_checkpoint(TRUNCATE);
            UPDATE outbox SET status = 'queued', sent_at = NULL, attempts = 0, next_attempt_at = 0,
                   lease_owner = NULL, lease_until = NULL, provider_id = NULL;
            PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
        cp "$P/nurture.db" "$P/queued.db"
    done
    declare -A R
    for r in $(seq 1 "$ROUNDS"); do
        echo "== (a3) round $r" >&2
        for who in "${WHO[@]}"; do
            P="$OUT/compare-$who"
            rm -f "$P"/nurture.db*; cp "$P/queued.db" "$P/nurture.db"
            curl -s -X POST "$RECV/reset" >/dev/null
            l=$(cut -d' ' -f1 /proc/loadavg)
            /usr/bin/time -f '%U %S' -o "$OUT/time.compare" "${BINS[$who]}" --config "$P/nurture.yaml" \
                run --until-idle --listen 127.0.0.1:0 >/dev/null 2>"$OUT/compare-$who.err"
            stats=$(curl -s "$RECV/stats")
            read -r count rate <<<"$(echo "$stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); d=(s["last_us"]-s["first_us"])/1e6; print(s["count"], "%.0f" % (s["count"]/d if d > 0 else 0))')"
            cpu=$(awk -v n="$count" '{ if (n > 0) printf "%.2f", ($1 + $2) * 100000 / n }' "$OUT/time.compare")
            R[$who|$r]="$rate $cpu $count $l"
        done
        curl -s -X POST "$RECV/reset" >/dev/null
        l=$(cut -d' ' -f1 /proc/loadavg)
        w=$(wrk -t2 -c64 -d"${WRK_S}s" -s "$OUT/post.lua" "$RECV/hook" | awk '/Requests\/sec/ { printf "%.0f", $2 }')
        R[wrk|$r]="$w - - $l"
        curl -s -X POST "$RECV/reset" >/dev/null
    done
    {
        echo
        echo "(a3) delivery alone, $N queued messages, $ROUNDS rounds (new = $BIN${BASE:+, base = $BASE})"
        echo
        echo "| who | runs: msg/s (CPU s per 100k, requests, load before) | min | median | median CPU s per 100k |"
        echo "|---|---|---:|---:|---:|"
        for who in "${WHO[@]}" wrk; do
            cells=() vals=() cpus=()
            for r in $(seq 1 "$ROUNDS"); do
                read -r m c n l <<<"${R[$who|$r]}"
                cells+=("$m ($c, $n, $l)"); vals+=("$m"); cpus+=("$c")
            done
            med() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
            echo "| $who | $(IFS=';'; echo "${cells[*]}") | $(printf '%s\n' "${vals[@]}" | sort -g | head -1) | $(med "${vals[@]}") | $(med "${cpus[@]}") |"
        done
    } | tee -a "$RESULT"
fi

# --- (b) latency at a steady rate --------------------------------------------
if [[ "$WHAT" == all || "$WHAT" == latency ]]; then
    P="$OUT/latency"
    webhook_project "$P" "$RECV"
    curl -s -X POST "$RECV/reset" >/dev/null
    echo "== (b) daemon, then $RATE contacts/s for $SECONDS_LOAD s" >&2
    start_listening latency-daemon "$BIN" --config "$P/nurture.yaml" run --listen 127.0.0.1:0
    DAEMON_PID=$PID
    "$LOAD" --api "http://$ADDR" --token "$TOKEN" --receiver "$RECV" \
        --rate "$RATE" --seconds "$SECONDS_LOAD" >"$OUT/latency.json" 2>"$OUT/latency.err"
    cat "$OUT/latency.err" >&2
    kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true
    r=$(cat "$OUT/latency.json")
    line=$(echo "$r" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("(b) latency POST /v1/contacts -> webhook received, %d contacts offered at %.0f/s (start lag max %.1f ms), %d accepted, %d received, %d missing: **p50 %.1f ms, p90 %.1f ms, p99 %.1f ms**, max %.1f ms (API answer p50 %.1f ms, p99 %.1f ms)" % (
    r["offered"], r["offered_rate"], r["start_lag_max_ms"], r["accepted"], r["received"], r["missing"],
    r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"], r["api_p50_ms"], r["api_p99_ms"]))')
    { echo; echo "$line"; } | tee -a "$RESULT"
fi

# --- (c) idle memory -------------------------------------------------------------
if [[ "$WHAT" == all || "$WHAT" == idle ]]; then
    P="$OUT/idle"
    rm -rf "$P"
    mkdir -p "$P"
    # Every directory the quick start's workflows read (a workflow naming a
    # segment or a contact way fails validation without it).
    for part in nurture.yaml workflows templates segments contact_ways; do
        [[ -e "$part" ]] && cp -r "$part" "$P/"
    done
    echo "== (c) the quick-start project, sample contacts, daemon idle for $IDLE_S s" >&2
    if [[ -f contacts/sample.csv ]]; then
        "$BIN" --config "$P/nurture.yaml" contacts import contacts/sample.csv >"$OUT/idle-import.log" 2>&1 || true
    fi
    start_listening idle-daemon "$BIN" --config "$P/nurture.yaml" run --listen 127.0.0.1:0
    IDLE_PID=$PID
    sleep "$IDLE_S"
    rss=$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$IDLE_PID/status")
    hwm=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$IDLE_PID/status")
    threads=$(awk '/Threads/ { print $2 }' "/proc/$IDLE_PID/status")
    contacts=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from contacts').fetchone()[0])" "$P/nurture.db")
    kill -TERM "$IDLE_PID"; wait "$IDLE_PID" || true
    { echo; echo "(c) idle memory, quick-start project ($contacts contacts), after $IDLE_S s: **VmRSS $rss MB** (VmHWM $hwm MB, $threads threads)"; } | tee -a "$RESULT"
fi

# --- (d) delivery alone, SQLite vs PostgreSQL with 1-3 daemons ---------------
# The SQL that queues M messages to M contacts; the same text on both stores
# (a recursive CTE counts 1..M).
queue_sql() {
    cat <<EOF
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $M)
INSERT INTO contacts (id, name, email, created_at, updated_at, attrs, unsubscribed)
SELECT 'd' || i, 'Name ' || i, 'd' || i || '@example.com', 0, 0, '{}', 0 FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $M)
INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                    status, attempts, not_before, next_attempt_at, created_at)
SELECT 'welcome:d' || i || ':' || i || ':0', 'welcome', 'd' || i, i, '0', 'hook', 'd' || i || '@example.com',
       'Welcome, Name ' || i || '!', 'queued', 0, 0, 0, 0 FROM n;
INSERT INTO cursors (name, position) SELECT 'daemon', max(seq) FROM event_log;
EOF
}

# Runs K daemons `--until-idle` on project $1 and prints the receiver's rate.
deliver_with() {
    local dir=$1 k=$2 pids=() i
    curl -s -X POST "$RECV/reset" >/dev/null
    for ((i = 0; i < k; i++)); do
        "$BIN" --config "$dir/nurture.yaml" run --until-idle --listen 127.0.0.1:0 \
            >"$OUT/stores-$k-$i.out" 2>"$OUT/stores-$k-$i.err" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    stats=$(curl -s "$RECV/stats")
    count=$(echo "$stats" | json '["count"]')
    unique=$(echo "$stats" | json '["unique"]')
    span=$(echo "$stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("%.3f" % ((s["last_us"]-s["first_us"])/1e6))')
    rate=$(awk -v n="$count" -v s="$span" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }')
    echo "$count requests ($unique distinct) in ${span} s = **$rate messages/s**"
}

if [[ "$WHAT" == all || "$WHAT" == stores ]]; then
    PSQL=$(ls /usr/lib/postgresql/*/bin/psql | head -n1)
    P="$OUT/stores"
    webhook_project "$P" "$RECV"
    echo "== (d) SQLite, 1 daemon, $M queued messages" >&2
    echo id >"$P/empty.csv"
    "$BIN" --config "$P/nurture.yaml" contacts import "$P/empty.csv" >/dev/null # creates the store
    queue_sql | sqlite3 "$P/nurture.db"
    line=$(deliver_with "$P" 1)
    { echo; echo "(d) delivery alone, $M queued messages, SQLite, 1 daemon: $line"; } | tee -a "$RESULT"
    for k in 1 2 3; do
        db="nurture_bench_$k"
        "$PSQL" -q "$NURTURE_TEST_POSTGRES" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
        url="${NURTURE_TEST_POSTGRES%/*}/$db"
        echo "== (d) PostgreSQL, $k daemon(s), $M queued messages" >&2
        NURTURE_DATABASE=$url "$BIN" --config "$P/nurture.yaml" contacts import "$P/empty.csv" >/dev/null
        queue_sql | "$PSQL" -q "$url"
        line=$(NURTURE_DATABASE=$url deliver_with "$P" "$k")
        { echo; echo "(d) delivery alone, $M queued messages, PostgreSQL, $k daemon(s): $line"; } | tee -a "$RESULT"
    done
fi
