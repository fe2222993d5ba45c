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
    # tests/attribution_docker.rs: the Docker Engine (with containerd and
    # runc) that --enrich-container follows, and its client.
    [dockerd]=docker.io
    [docker]=docker.io
    # tests/nats_valkey.rs: the servers of the nats: and valkey: destinations
    # (the tests start their own on free loopback ports; redis-server speaks
    # Valkey's protocol).
    # tests/attribution_lldp.rs: lldpd on both ends of a veth pair, the
    # real LLDP neighbour --enrich-lldp reads through lldpcli.
    [lldpd]=lldpd
    [lldpcli]=lldpd
    [nats-server]=nats-server
    [redis-server]=redis-server
)
# header → Debian package: what the build of xtcp2 itself compiles against.
# librdkafka (bundled in the rdkafka crate, built by its ./configure and
# make) links the system's OpenSSL (TLS to brokers) and zlib (gzip), and
# its build finds them with pkg-config.
declare -A build_headers=(
    [/usr/include/openssl/ssl.h]=libssl-dev
    [/usr/include/zlib.h]=zlib1g-dev
    [/usr/bin/pkg-config]=pkg-config
)
missing=()
for cmd in "${!needs[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
for header in "${!build_headers[@]}"; do
    [ -e "$header" ] || missing+=("${build_headers[$header]}")
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
# it there, see tests/support/python.rs): the independent clients that read
# back what xtcp2 sent. One line per module (pip name → import name):
#   chdb: ClickHouse as a library (tests/clickhouse.rs, tests/go_schema.rs);
#   protobuf, grpcio-tools: protoc and Python classes from our .proto files;
#   grpcio-reflection: the gRPC tests' reflection client (v1alpha);
#   kafka-python, zstandard, lz4, cramjam: the Kafka consumer and its codecs;
#   pyyaml: parses the Kubernetes manifests (tests/deploy.rs).
declare -A python_modules=(
    [chdb]=chdb
    [protobuf]=google.protobuf
    [grpcio-tools]=grpc_tools.protoc
    [grpcio-reflection]=grpc_reflection.v1alpha.reflection_pb2_grpc
    [kafka-python]=kafka
    [zstandard]=zstandard
    [lz4]=lz4.frame
    [cramjam]=cramjam
    [python-snappy]=snappy
    [pyyaml]=yaml
    # tests/nats_valkey.rs: the independent readers of the nats: and valkey: destinations.
    [nats-py]=nats
    [redis]=redis
)
venv=/var/cache/xtcp2-ci/venv
imports=$(printf 'import %s\n' "${python_modules[@]}")
if ! "$venv/bin/python" -c "$imports" >/dev/null 2>&1; then
    log "pip install ${!python_modules[*]} into $venv"
    mkdir -p /var/cache/xtcp2-ci
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "${!python_modules[@]}"
else
    log "python modules present in $venv: ${!python_modules[*]}"
fi

# The Kafka-protocol broker of the Kafka tests (tansu, from crates.io),
# installed once into the cache and reused. Optimisation level 1: the tests
# and the benchmark measure xtcp2, not the broker, and level 1 builds in
# much less time than the default 3 on two cores.
tansu_root=/var/cache/xtcp2-ci/tansu
if [ ! -x "$tansu_root/bin/tansu" ]; then
    log "cargo install tansu into $tansu_root (the longest step of a fresh machine)"
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install --quiet --locked --version 0.6.0 \
        --features dynostore --root "$tansu_root" \
        --target-dir /var/cache/xtcp2-ci/tansu-build tansu
else
    log "tansu present in $tansu_root"
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
