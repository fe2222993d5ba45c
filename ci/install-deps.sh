#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine that has
# only the Rust toolchain, gcc, python3 and the Debian archive. Idempotent:
# packages already present are not fetched again.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*"; }

# command → Debian package
declare -A needs=(
    [qemu-system-x86_64]=qemu-system-x86
    [busybox]=busybox-static
    [depmod]=kmod
    [cpio]=cpio
    [promtool]=prometheus
    # the server itself: tests/alerts.rs scrapes real daemons with the rules.
    [prometheus]=prometheus
    [nix-instantiate]=nix-bin
    [ip]=iproute2
    [ss]=iproute2
    [setpriv]=util-linux
    [unshare]=util-linux
    [nc]=netcat-openbsd
    # jemalloc's build (the heap-profiling feature) runs make.
    [make]=make
    # the https tests make their certificates with the openssl CLI.
    [openssl]=openssl
)
missing=()
for cmd in "${!needs[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    mapfile -t unique < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "apt-get install ${unique[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${unique[@]}" >/dev/null
else
    log "all Debian packages present"
fi

# Python modules of the tests, in a venv cached between runs (the tests find
# it there, see tests/support/python.rs): chdb (ClickHouse as a library) for
# tests/clickhouse.rs and tests/go_schema.rs; protobuf and grpcio-tools
# (protoc, to generate Python classes from our .proto files) for
# tests/go_schema.rs.
venv=/var/cache/xtcp2-ci/venv
if ! "$venv/bin/python" -c 'import chdb, google.protobuf, grpc_tools.protoc' >/dev/null 2>&1; then
    log "pip install chdb protobuf grpcio-tools into $venv"
    mkdir -p /var/cache/xtcp2-ci
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet chdb protobuf grpcio-tools
else
    log "chdb, protobuf and grpcio-tools present in $venv"
fi

# matplotlib for the soak run's plot (bench/soak.py), in a venv of its own
# cached between runs, like chdb's; soak.py re-executes itself with this
# venv's python when the system python lacks matplotlib, and under CI=true
# fails (never skips) when neither has it.
bench_venv=/var/cache/xtcp2-ci/bench-venv
if ! "$bench_venv/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
    log "pip install matplotlib into $bench_venv"
    mkdir -p /var/cache/xtcp2-ci
    python3 -m venv "$bench_venv"
    "$bench_venv/bin/pip" install --quiet matplotlib
else
    log "matplotlib present in $bench_venv"
fi

# cargo-fuzz for the bounded fuzzing step (fuzz/run), installed once into
# the cache and reused.
fuzz_root=/var/cache/xtcp2-ci/cargo-fuzz
if [ ! -x "$fuzz_root/bin/cargo-fuzz" ]; then
    log "cargo install cargo-fuzz into $fuzz_root"
    cargo install --quiet --locked --root "$fuzz_root" cargo-fuzz
else
    log "cargo-fuzz present in $fuzz_root"
fi
