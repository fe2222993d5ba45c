# Shared helpers of the xtcp2 scenario scripts. POSIX sh: the microVM runs
# them with busybox ash, the NixOS checks with bash. Sourced, not executed.
#
# Interface (the same for microvms/run and the Nix checks):
#   XTCP2_BIN    xtcp2 binary (default: xtcp2 on PATH)
#   XTCP2_START  direct  = the scenario starts and stops the daemon itself
#                systemd = the daemon is the xtcp2.service unit (XTCP2_UNIT)
#   XTCP2_ROWS   file the daemon's file: destination writes
#   XTCP2_PROM   host:port of /metrics, /healthz, /readyz (127.0.0.1:9088)
#   IP, SS       iproute2 ip and ss (default from PATH)
#   SETPRIV      util-linux setpriv (default from PATH)
#   XTCP2_BREAK  non-empty: add one deliberately failing check, to prove
#                that a failure reaches the verdict
# Each scenario ends with the line "N passed, M failed" and exits non-zero
# when M > 0.

XTCP2_BIN=${XTCP2_BIN:-xtcp2}
XTCP2_START=${XTCP2_START:-direct}
XTCP2_ROWS=${XTCP2_ROWS:-/tmp/xtcp2-rows.jsonl}
XTCP2_PROM=${XTCP2_PROM:-127.0.0.1:9088}
XTCP2_UNIT=${XTCP2_UNIT:-xtcp2}
IP=${IP:-ip}
SS=${SS:-ss}
SETPRIV=${SETPRIV:-setpriv}

PASSED=0
FAILED=0

log() { echo "# $*"; }
pass() { PASSED=$((PASSED + 1)); echo "ok $((PASSED + FAILED)) - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "not ok $((PASSED + FAILED)) - $*"; }

# check DESCRIPTION COMMAND...: pass when COMMAND succeeds.
check() {
	_desc=$1
	shift
	if "$@"; then pass "$_desc"; else fail "$_desc"; fi
}

# check_eq DESCRIPTION EXPECTED ACTUAL
check_eq() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1 (expected '$2', got '$3')"; fi
}

# check_ge DESCRIPTION ACTUAL MINIMUM (integers; empty counts as failure)
check_ge() {
	if [ -n "$2" ] && [ "$2" -ge "$3" ] 2>/dev/null; then
		pass "$1 ($2 >= $3)"
	else
		fail "$1 (expected >= $3, got '$2')"
	fi
}

# wait_for SECONDS COMMAND...: retry COMMAND every half second until it
# succeeds; fails after SECONDS, or at once when the command named in
# WAIT_GUARD (e.g. "is the daemon still running") fails, so that a dead
# daemon does not cost every wait its full time.
wait_for() {
	_deadline=$(($(date +%s) + $1))
	shift
	while ! "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -ge "$_deadline" ] && return 1
		if [ -n "${WAIT_GUARD:-}" ] && ! $WAIT_GUARD >/dev/null 2>&1; then
			return 1
		fi
		sleep 0.5
	done
	return 0
}

# finish: the verdict line and exit status.
finish() {
	if [ -n "${XTCP2_BREAK:-}" ]; then
		check "deliberately broken assertion (XTCP2_BREAK=$XTCP2_BREAK): 1 equals 2" [ 1 -eq 2 ]
	fi
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
	exit $?
}

# http_get PATH: body on stdout; succeeds only for a 2xx answer.
http_get() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS --max-time 5 "http://$XTCP2_PROM$1"
	else
		# Not wget -T: busybox 1.35's wget crashes with it.
		timeout 10 wget -q -O - "http://$XTCP2_PROM$1"
	fi
}

# metric NAME: the sum of every series of NAME in /metrics, as an integer;
# empty when the metric is absent.
metric() {
	http_get /metrics 2>/dev/null | awk -v n="$1" '
		/^#/ { next }
		{ name = $1; sub(/\{.*/, "", name) }
		name == n { sum += $NF; found = 1 }
		END { if (found) printf "%d\n", sum }'
}

# The awk function behind rows and field: f("name") is the value of the flat
# JSON field "name" on the current line (strings without their quotes), ""
# when absent. The records are flat, so no JSON parser is needed.
JSON_AWK='
function f(name,   i, s) {
	i = index($0, "\"" name "\":")
	if (!i) return ""
	s = substr($0, i + length(name) + 3)
	sub(/^ */, "", s)
	if (substr(s, 1, 1) == "\"") {
		s = substr(s, 2)
		return substr(s, 1, index(s, "\"") - 1)
	}
	match(s, /^[-+.0-9a-zA-Z]*/)
	return substr(s, 1, RLENGTH)
}'

# rows AWK_CONDITION [FILE]: print the JSON lines of FILE (default
# XTCP2_ROWS, - for stdin) for which the condition holds, e.g.
#   rows 'f("idiag_dport") == "5001" && f("tcpi_rtt") + 0 > 0'
rows() { awk "$JSON_AWK"'
'"$1"' { print }' "${2:-$XTCP2_ROWS}" 2>/dev/null; }

# field NAME: the value of NAME on each JSON line of stdin.
field() { awk "$JSON_AWK"'
{ print f("'"$1"'") }'; }

# count_rows AWK_CONDITION [FILE]
count_rows() { rows "$@" | wc -l | tr -d ' '; }

# netns_inode FILE: the namespace inode behind a netns file or
# /proc/PID/ns/net (what the records call netns_inode).
netns_inode() { stat -L -c %i "$1"; }
