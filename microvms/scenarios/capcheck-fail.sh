#!/bin/sh
# capcheck-fail: the startup capability check, with capabilities really
# taken away by the kernel (setpriv, as root).
#
#   without CAP_NET_ADMIN, CAP_SYS_ADMIN, or both: the exact message line
#   per missing capability from docs/contract.md, and exit code 77;
#   without only the soft ones (CAP_SYS_PTRACE, CAP_NET_RAW,
#   CAP_SYS_RESOURCE): one warning naming each, and a normal one-shot run.
#
# The daemon is started here directly under setpriv in both modes. With
# XTCP2_START=systemd the scenario first checks the xtcp2 unit as well,
# which the NixOS flavor configures without CAP_NET_ADMIN and CAP_SYS_ADMIN:
# it must have exited 77 with both lines in its journal. Must run as root.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

MSG_NET_ADMIN='xtcp2: missing capability CAP_NET_ADMIN: required for netlink inet_diag queries'
MSG_SYS_ADMIN='xtcp2: missing capability CAP_SYS_ADMIN: required for setns(CLONE_NEWNET) into each network namespace'
EX_NOPERM=77
OUT=/tmp/xtcp2-capcheck.out
ERR=/tmp/xtcp2-capcheck.err
# One poll, no output, no listener: the run either stops at the check or
# finishes at once.
ONE_SHOT="--max-loops 1 --dest null --prom-listen="

# without CAPS COMMAND...: run COMMAND as root with CAPS (comma list of
# lower-case names without cap_) gone from the bounding and inheritable sets.
# For root the permitted and effective sets after execve are the bounding
# set (plus inheritable and ambient), so this really removes them.
without() {
	_caps=$1
	shift
	_drop=$(echo "$_caps" | sed 's/[^,][^,]*/-&/g')
	"$SETPRIV" --inh-caps="$_drop" --bounding-set="$_drop" -- "$@"
}

# effective_has CAPS NUMBER: whether bit NUMBER is set in the CapEff of a
# process started like the daemon (checks the harness, not xtcp2).
effective_has() {
	_hex=$(without "$1" cat /proc/self/status | awk '/^CapEff:/ { print $2 }')
	[ -n "$_hex" ] && [ $(((0x$_hex >> $2) & 1)) -eq 1 ]
}

# run_without CAPS: run the one-shot daemon; stdout in OUT, stderr in ERR,
# exit code in RC.
run_without() {
	# shellcheck disable=SC2086 # ONE_SHOT is a list of words
	without "$1" "$XTCP2_BIN" $ONE_SHOT >"$OUT" 2>"$ERR"
	RC=$?
	log "without $1: exit $RC"
	sed 's/^/#   stderr: /' "$ERR" | head -n 20
}

has_line() { grep -qxF "$1" "$ERR"; }
lacks_line() { ! grep -qxF "$1" "$ERR"; }
# warns CAP: a warning line naming CAP, on stderr or stdout.
warns() { cat "$OUT" "$ERR" | grep -i 'warn' | grep -q "$1"; }

check_eq "running as root" 0 "$(id -u)"

# --- the service, when systemd started it -------------------------------------
if [ "$XTCP2_START" = systemd ]; then
	unit_status() { systemctl show -p ExecMainStatus "$XTCP2_UNIT" | sed 's/^ExecMainStatus=//'; }
	unit_exited_77() { [ "$(unit_status)" = "$EX_NOPERM" ]; }
	journal_has() { journalctl -u "$XTCP2_UNIT" -o cat --no-pager 2>/dev/null | grep -qxF "$1"; }
	check "the $XTCP2_UNIT unit without both capabilities exits 77" wait_for 60 unit_exited_77
	check "the unit's journal has the exact CAP_NET_ADMIN line" wait_for 10 journal_has "$MSG_NET_ADMIN"
	check "the unit's journal has the exact CAP_SYS_ADMIN line" wait_for 10 journal_has "$MSG_SYS_ADMIN"
	check "the unit is not running" sh -c '! systemctl is-active --quiet "$1"' - "$XTCP2_UNIT"
fi

# The harness itself: the dropped capability must really be gone, and the
# others kept (CAP_NET_ADMIN is bit 12, CAP_SYS_ADMIN 21, CAP_NET_RAW 13,
# CAP_SYS_PTRACE 19, CAP_SYS_RESOURCE 24).
if effective_has net_admin 12; then fail "setpriv left CAP_NET_ADMIN effective"; else pass "setpriv removes CAP_NET_ADMIN"; fi
if effective_has sys_admin 21; then fail "setpriv left CAP_SYS_ADMIN effective"; else pass "setpriv removes CAP_SYS_ADMIN"; fi
if effective_has net_admin 21; then pass "dropping CAP_NET_ADMIN keeps CAP_SYS_ADMIN"; else fail "dropping CAP_NET_ADMIN lost CAP_SYS_ADMIN"; fi

# --- control: every capability ------------------------------------------------
# shellcheck disable=SC2086
"$XTCP2_BIN" $ONE_SHOT >"$OUT" 2>"$ERR"
RC=$?
log "with every capability: exit $RC"
check_eq "with every capability: one-shot run exits 0" 0 "$RC"
check "with every capability: no missing-capability line" sh -c '! grep -q "missing capability" "$1"' - "$ERR"
for cap in CAP_SYS_PTRACE CAP_NET_RAW CAP_SYS_RESOURCE; do
	check "with every capability: no warning about $cap" sh -c '! (cat "$1" "$2" | grep -i warn | grep -q "$3")' - "$OUT" "$ERR" "$cap"
done

# --- hard capabilities ----------------------------------------------------------
run_without net_admin
check_eq "without CAP_NET_ADMIN: exit code 77" "$EX_NOPERM" "$RC"
check "without CAP_NET_ADMIN: the exact CAP_NET_ADMIN line" has_line "$MSG_NET_ADMIN"
check "without CAP_NET_ADMIN: no CAP_SYS_ADMIN line" lacks_line "$MSG_SYS_ADMIN"

run_without sys_admin
check_eq "without CAP_SYS_ADMIN: exit code 77" "$EX_NOPERM" "$RC"
check "without CAP_SYS_ADMIN: the exact CAP_SYS_ADMIN line" has_line "$MSG_SYS_ADMIN"
check "without CAP_SYS_ADMIN: no CAP_NET_ADMIN line" lacks_line "$MSG_NET_ADMIN"

run_without net_admin,sys_admin
check_eq "without both: exit code 77" "$EX_NOPERM" "$RC"
check "without both: the exact CAP_NET_ADMIN line" has_line "$MSG_NET_ADMIN"
check "without both: the exact CAP_SYS_ADMIN line" has_line "$MSG_SYS_ADMIN"
check "without both: a systemd snippet follows the message lines" \
	[ "$(grep -c . "$ERR")" -gt 2 ]
check "without both: no records on stdout" [ ! -s "$OUT" ]

# --- soft capabilities only -----------------------------------------------------
run_without sys_ptrace,net_raw,sys_resource
check_eq "without the soft capabilities: one-shot run exits 0" 0 "$RC"
for cap in CAP_SYS_PTRACE CAP_NET_RAW CAP_SYS_RESOURCE; do
	check "without the soft capabilities: a warning names $cap" warns "$cap"
done
check "without the soft capabilities: no missing-capability error line" \
	sh -c '! grep -q "^xtcp2: missing capability" "$1"' - "$ERR"

finish
