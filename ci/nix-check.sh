#!/usr/bin/env bash
# Offline checks of every .nix file in the repository.
#
# Nix cannot fetch the flake's inputs here (no access to GitHub or the Nix
# binary cache), so the flake cannot be evaluated or built. What can be
# checked without them, for each file:
#   1. it parses:            nix-instantiate --parse
#   2. it is formatted:      nixpkgs-fmt --check
#   3. no dead bindings:     deadnix --fail (unused let bindings / arguments)
#
# Tools come from package registries the machine can reach: nix-instantiate
# from Debian's nix-bin, nixpkgs-fmt and deadnix from crates.io, installed
# with `cargo install --locked` into a cache directory that outlives a CI run
# on the same machine (skipped when the pinned versions are already there).
#
# Usage: bash ci/nix-check.sh   (from anywhere inside the repository)
# Env:   XTCP2_CI_CACHE  cache root (default /var/cache/xtcp2-ci)
# Prints each file and check, then "nix-check: N passed, M failed"; exits
# non-zero when anything failed or a tool could not be installed.
set -euo pipefail

NIXPKGS_FMT_VERSION=1.3.0
DEADNIX_VERSION=1.3.1

cache_root="${XTCP2_CI_CACHE:-/var/cache/xtcp2-ci}"
export CARGO_INSTALL_ROOT="$cache_root/cargo"
export PATH="$CARGO_INSTALL_ROOT/bin:$PATH"
# Plain diagnostics in CI logs (deadnix colours its report otherwise).
export NO_COLOR=1

cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

log() { printf 'nix-check: %s\n' "$*"; }

# --- tools -------------------------------------------------------------------

if ! command -v nix-instantiate >/dev/null 2>&1; then
    log "installing nix-instantiate (Debian package nix-bin)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nix-bin >/dev/null
fi

# cargo_tool BINARY CRATE VERSION: install CRATE@VERSION unless BINARY
# already reports that version.
cargo_tool() {
    local bin=$1 crate=$2 version=$3
    local have=""
    if [ -x "$CARGO_INSTALL_ROOT/bin/$bin" ]; then
        have=$("$CARGO_INSTALL_ROOT/bin/$bin" --version 2>/dev/null || true)
    fi
    case "$have" in
        *" $version") return 0 ;;
    esac
    if ! command -v cargo >/dev/null 2>&1; then
        log "cargo is needed to install $crate"
        exit 1
    fi
    log "installing $crate $version into $CARGO_INSTALL_ROOT (a few minutes, once)"
    mkdir -p "$CARGO_INSTALL_ROOT"
    cargo install --quiet --locked --force --version "=$version" "$crate"
}
cargo_tool nixpkgs-fmt nixpkgs-fmt "$NIXPKGS_FMT_VERSION"
cargo_tool deadnix deadnix "$DEADNIX_VERSION"

log "$(nix-instantiate --version), $(nixpkgs-fmt --version), $(deadnix --version)"

# --- files -------------------------------------------------------------------

# Tracked files, plus new ones not yet added (so it also works before a
# commit); ignored files are left out.
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.nix' | sort -u)
present=()
for f in "${files[@]}"; do
    # A tracked file deleted in the work tree is not there to check.
    [ -f "$f" ] && present+=("$f")
done
files=("${present[@]}")
if [ "${#files[@]}" -eq 0 ]; then
    log "no .nix files found"
    exit 1
fi

# A scratch home, so nothing is written to the caller's ~/.cache.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

passed=0
failed=0
check() {
    local what=$1 file=$2
    shift 2
    local out
    if out=$("$@" 2>&1); then
        passed=$((passed + 1))
        printf '  ok    %-9s %s\n' "$what" "$file"
    else
        failed=$((failed + 1))
        printf '  FAIL  %-9s %s\n' "$what" "$file"
        printf '%s\n' "$out" | sed 's/^/        /'
    fi
}

log "checking ${#files[@]} files"
for f in "${files[@]}"; do
    # dummy:// is a store that holds nothing: parsing needs no store, and so
    # this runs without a Nix daemon and writes nothing under /nix.
    check parse "$f" env HOME="$scratch" XDG_CACHE_HOME="$scratch" \
        nix-instantiate --store dummy:// --parse "$f"
    check format "$f" nixpkgs-fmt --check "$f"
    check deadnix "$f" deadnix --fail "$f"
done

if [ "$failed" -gt 0 ]; then
    log "fix formatting with: nixpkgs-fmt ${files[*]}"
fi
echo "nix-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
