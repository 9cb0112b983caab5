# Shared by the bench scripts: `source bench/lib.sh` (from the repository root) after OUT
# and PIDS are set.

# start_listening NAME CMD...: runs CMD in the background (output in
# $OUT/NAME.out, errors appended to $OUT/NAME.err), remembers its pid in PID
# and PIDS, and waits for its "listening on ADDR" line: ADDR is then set.
# Up to 20 s (a daemon restarting on a big store takes a while).
start_listening() {
    local name=$1; shift
    "$@" >"$OUT/$name.out" 2>>"$OUT/$name.err" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 1 400); do
        if ADDR=$(sed -n 's/^listening on //p' "$OUT/$name.out" | head -n1) && [[ -n "$ADDR" ]]; then
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || { echo "bench: $name exited; see $OUT/$name.err" >&2; exit 1; }
        sleep 0.05
    done
    echo "bench: $name did not print its address" >&2
    exit 1
}
