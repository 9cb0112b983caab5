#!/usr/bin/env bash
# The test suite. The README and CI (.ci/run) both call this script, so what
# you run locally is what CI runs. Extra arguments go to `cargo test`
# (e.g. ./test.sh dry_run to run only matching tests).
#
# The suite runs twice: on SQLite (the default store), then on a throwaway
# PostgreSQL server that .ci/with-postgres.sh starts and stops (installing
# PostgreSQL from Debian's packages if it is missing), and the equivalence
# tests a third time under a Chinese collation. NURTURE_SKIP_POSTGRES=1
# skips the PostgreSQL runs.
set -euo pipefail
cd "$(dirname "$0")"

# tests/it/smtp_channel.rs talks to a real SMTP server: aiosmtpd, from PyPI.
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        # Debian's python3 comes without pip.
        sudo=""
        [[ "$(id -u)" -eq 0 ]] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip >&2
    fi
    # PIP_BREAK_SYSTEM_PACKAGES: Debian marks its python3 "externally managed".
    PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1 \
        python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
fi

echo "== cargo test (SQLite)" >&2
cargo test --locked "$@"

if [[ "${NURTURE_SKIP_POSTGRES:-}" != 1 ]]; then
    echo "== cargo test (PostgreSQL)" >&2
    .ci/with-postgres.sh cargo test --locked "$@"
    # The schema-parity test compares both migration sets; it needs the server.
    echo "== schema parity (SQLite and PostgreSQL migrations)" >&2
    .ci/with-postgres.sh cargo test --locked --test it schema_parity -- --ignored
    # A database's collation must not change what an audience selects nor
    # make the preview differ from the daemon (docs/operations.md): the
    # tests that compare the stores' SQL with the evaluator and the preview
    # with the daemon, on a server whose default collation is ICU's zh-CN
    # (pinyin order; `c_2` before `c-1`, `C2` after `c10`).
    echo "== PostgreSQL under ICU's zh-CN collation (the equivalence tests)" >&2
    NURTURE_PG_ICU_LOCALE=zh-CN .ci/with-postgres.sh cargo test --locked --test it -- \
        audience_equivalence plan_equals_daemon date_trigger dry_run:: split:: throttle::
fi

# The examples are part of the product: the quick start runs them, users copy them.
echo "== validate the examples" >&2
cargo run --locked --quiet -- validate
cargo run --locked --quiet -- --config bench/nurture.yaml validate

# The quick start's workflow tests (workflow-tests/, see docs/workflow-tests.md).
echo "== nurture test (the quick start's workflow tests)" >&2
cargo run --locked --quiet -- test

# The committed sample is exactly what the generator writes.
echo "== contacts/sample.csv matches bench/gen_contacts.py" >&2
python3 bench/gen_contacts.py --rows 3000 | cmp - contacts/sample.csv
