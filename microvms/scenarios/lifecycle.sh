#!/bin/sh
# lifecycle: xtcp2 follows TCP sockets across the three kinds of network
# namespace a host has, from start to SIGTERM.
#
#   named      ip netns add (bind mount under /run/netns)
#   docker     a netns file bind-mounted under a Docker-like directory that
#              the daemon is told about with --netns-dirs
#   anonymous  unshare -n, held only by its processes (found by /proc scan)
#
# Each is joined to the root namespace by a veth pair and holds one IPv4 and
# one IPv6 TCP connection to a known port (servers inside, clients in the
# root namespace). The scenario asserts health and readiness, the metrics,
# that every connection appears in the captured rows in the right namespace
# with sane tcp_info, that a deleted namespace stops being polled, and that
# SIGHUP reopens the file destination, and SIGTERM flushes and exits 0.
#
# Besides the variables of lib.sh:
#   NC                    busybox-compatible nc (nc -l -p PORT; nc HOST PORT);
#                         without NC, socat is used when on PATH, else nc
#   XTCP2_DOCKER_NETNS_DIR  the Docker-like directory (direct: a non-default
#                         /run/fakedocker/netns passed with --netns-dirs;
#                         systemd: /run/docker/netns, which the unit's default
#                         --netns-dirs covers)
#   XTCP2_FREQ_S          the daemon's poll period in seconds (direct: 1,
#                         which this script passes; systemd: what the unit
#                         uses, 1 recommended)
#   XTCP2_WAIT            seconds to wait for anything that takes polls (30)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

# The TCP tool: busybox nc in the microVM, socat in the NixOS checks.
if [ -z "${NC:-}" ] && command -v socat >/dev/null 2>&1; then
	NET_TOOL=socat
else
	NET_TOOL=nc
	NC=${NC:-nc}
fi
FREQ_S=${XTCP2_FREQ_S:-1}
WAIT=${XTCP2_WAIT:-30}
if [ "$XTCP2_START" = systemd ]; then
	DOCKER_DIR=${XTCP2_DOCKER_NETNS_DIR:-/run/docker/netns}
else
	DOCKER_DIR=${XTCP2_DOCKER_NETNS_DIR:-/run/fakedocker/netns}
fi
# How long clients and servers hold their connections; cleanup ends them
# earlier, this only bounds what a killed script leaves behind.
HOLD_S=600

NAMED=xtcp2-named
DOCKER_ID=c0ffee5ca1ab1e
DOCKER_FILE=$DOCKER_DIR/$DOCKER_ID
DAEMON_LOG=/tmp/xtcp2-lifecycle.log

# kind  v4 server address  v6 server address  v4 port  v6 port
#   named      10.77.1.2   fd77:1::2   5001  5002
#   docker     10.77.2.2   fd77:2::2   5011  5012
#   anonymous  10.77.3.2   fd77:3::2   5021  5022
# The addresses exist only inside this machine's own namespaces.

SPAWNED=""
DAEMON_PID=""
ANON_PID=""

# spawn SHELL_COMMAND: run it in the background in its own process group,
# so that cleanup can end the whole pipeline.
spawn() {
	setsid sh -c "$1" </dev/null >/dev/null 2>&1 &
	SPAWNED="$SPAWNED $!"
}

cleanup() {
	for p in $SPAWNED; do kill -TERM -"$p" 2>/dev/null; done
	[ -n "$ANON_PID" ] && kill "$ANON_PID" 2>/dev/null
	for p in $($IP netns pids "$NAMED" 2>/dev/null); do kill "$p" 2>/dev/null; done
	$IP netns del "$NAMED" 2>/dev/null
	umount "$DOCKER_FILE" 2>/dev/null && rm -f "$DOCKER_FILE"
	$IP link del h-named 2>/dev/null
	$IP link del h-docker 2>/dev/null
	$IP link del h-anon 2>/dev/null
	if [ -n "$DAEMON_PID" ]; then kill -KILL "$DAEMON_PID" 2>/dev/null; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# in_ns KIND COMMAND...: run COMMAND in namespace KIND.
in_ns() {
	_kind=$1
	shift
	case $_kind in
	named) $IP netns exec "$NAMED" "$@" ;;
	docker) nsenter --net="$DOCKER_FILE" "$@" ;;
	anon) nsenter -t "$ANON_PID" -n "$@" ;;
	esac
}

# in_ns_cmd KIND: the same as a command prefix for spawn's shell strings.
in_ns_cmd() {
	case $1 in
	named) echo "$IP netns exec $NAMED" ;;
	docker) echo "nsenter --net=$DOCKER_FILE" ;;
	anon) echo "nsenter -t $ANON_PID -n" ;;
	esac
}

# wire KIND NET: veth h-KIND (root, 10.77.NET.1) <-> n-KIND (10.77.NET.2),
# the inner end moved into namespace TARGET (a name or a pid for ip).
wire() {
	_kind=$1 _net=$2 _target=$3
	$IP link add "h-$_kind" type veth peer name "n-$_kind" || return 1
	$IP link set "n-$_kind" netns "$_target" || return 1
	$IP addr add "10.77.$_net.1/24" dev "h-$_kind"
	# nodad: the addresses are usable at once instead of after DAD.
	$IP -6 addr add "fd77:$_net::1/64" dev "h-$_kind" nodad
	$IP link set "h-$_kind" up
	in_ns "$_kind" "$IP" link set lo up
	in_ns "$_kind" "$IP" addr add "10.77.$_net.2/24" dev "n-$_kind"
	in_ns "$_kind" "$IP" -6 addr add "fd77:$_net::2/64" dev "n-$_kind" nodad
	in_ns "$_kind" "$IP" link set "n-$_kind" up
}

listening() { # listening KIND PORT
	in_ns "$1" "$SS" -Hltn "sport = :$2" | grep -q LISTEN
}
established() { # established DEST_PORT (client side, root namespace)
	$SS -Htn state established "dport = :$1" | grep -q .
}

# server_cmd PORT: a dual-stack server that accepts one connection and
# holds it while its stdin stays open (IPv4 clients arrive as v4-mapped).
server_cmd() {
	if [ "$NET_TOOL" = socat ]; then
		echo "socat STDIO TCP6-LISTEN:$1,ipv6only=0,reuseaddr"
	else
		echo "$NC -l -p $1"
	fi
}
# client_cmd ADDRESS PORT: a client holding its connection likewise.
client_cmd() {
	if [ "$NET_TOOL" = socat ]; then
		case $1 in
		*:*) echo "socat STDIO TCP6:[$1]:$2" ;;
		*) echo "socat STDIO TCP4:$1:$2" ;;
		esac
	else
		echo "$NC $1 $2"
	fi
}

# serve_and_connect KIND ADDRESS PORT
serve_and_connect() {
	_kind=$1 _addr=$2 _port=$3
	spawn "sleep $HOLD_S | $(in_ns_cmd "$_kind") $(server_cmd "$_port")"
	wait_for 10 listening "$_kind" "$_port" || log "no listener on $_kind port $_port"
	# The line sent gives both ends an RTT sample beyond the handshake.
	spawn "(echo hello; sleep $HOLD_S) | $(client_cmd "$_addr" "$_port")"
	wait_for 10 established "$_port" || log "no connection to $_addr port $_port"
}

start_daemon() {
	if [ "$XTCP2_START" = systemd ]; then
		check "xtcp2 unit $XTCP2_UNIT is active" systemctl is-active --quiet "$XTCP2_UNIT"
		return
	fi
	rm -f "$XTCP2_ROWS"
	log "starting $XTCP2_BIN"
	"$XTCP2_BIN" --frequency "${FREQ_S}s" --timeout 500ms \
		--dest "file:$XTCP2_ROWS" --prom-listen "$XTCP2_PROM" \
		--netns-dirs "/run/netns,$DOCKER_DIR" >"$DAEMON_LOG" 2>&1 &
	DAEMON_PID=$!
	sleep 1
	check "xtcp2 is running after start" daemon_running
}

daemon_running() {
	if [ "$XTCP2_START" = systemd ]; then
		systemctl is-active --quiet "$XTCP2_UNIT"
	else
		kill -0 "$DAEMON_PID" 2>/dev/null
	fi
}

daemon_log() {
	if [ "$XTCP2_START" = systemd ]; then
		journalctl -u "$XTCP2_UNIT" --no-pager 2>/dev/null | tail -n 30
	else
		tail -n 30 "$DAEMON_LOG" 2>/dev/null
	fi | sed 's/^/# daemon: /'
}

# --- the daemon comes up ----------------------------------------------------
mkdir -p "$DOCKER_DIR"
start_daemon
if daemon_running; then
	# From here on a dead daemon ends every wait at once.
	WAIT_GUARD=daemon_running
else
	daemon_log
	WAIT=1
fi
check "/healthz answers 200" wait_for 20 http_get /healthz
check "/readyz answers 200 after the first poll" wait_for "$WAIT" http_get /readyz

# --- three namespaces, two connections each ---------------------------------
ROOT_INODE=$(netns_inode /proc/self/ns/net)

$IP netns add "$NAMED"
NAMED_INODE=$(netns_inode "/run/netns/$NAMED")

# Docker-style: a namespace made by a process, pinned by a bind mount of its
# ns file in the Docker-like directory; the process then goes away.
unshare -n sleep "$HOLD_S" &
_holder=$!
wait_for 5 sh -c "[ \"\$(stat -L -c %i /proc/$_holder/ns/net)\" != $ROOT_INODE ]"
touch "$DOCKER_FILE"
mount --bind "/proc/$_holder/ns/net" "$DOCKER_FILE"
kill "$_holder"
DOCKER_INODE=$(netns_inode "$DOCKER_FILE")

# Anonymous: held only by its process.
unshare -n sleep "$HOLD_S" &
ANON_PID=$!
wait_for 5 sh -c "[ \"\$(stat -L -c %i /proc/$ANON_PID/ns/net)\" != $ROOT_INODE ]"
ANON_INODE=$(netns_inode "/proc/$ANON_PID/ns/net")

log "netns inodes: root=$ROOT_INODE named=$NAMED_INODE docker=$DOCKER_INODE anon=$ANON_INODE"
check "four distinct namespaces" [ "$(printf '%s\n' "$ROOT_INODE" "$NAMED_INODE" "$DOCKER_INODE" "$ANON_INODE" | sort -u | wc -l)" -eq 4 ]

wire named 1 "$NAMED"
wire docker 2 "$DOCKER_FILE"
wire anon 3 "$ANON_PID"

serve_and_connect named 10.77.1.2 5001
serve_and_connect named fd77:1::2 5002
serve_and_connect docker 10.77.2.2 5011
serve_and_connect docker fd77:2::2 5012
serve_and_connect anon 10.77.3.2 5021
serve_and_connect anon fd77:3::2 5022

CONNS="named:$NAMED_INODE:10.77.1.2:5001:2 named:$NAMED_INODE:fd77:1::2:5002:10
docker:$DOCKER_INODE:10.77.2.2:5011:2 docker:$DOCKER_INODE:fd77:2::2:5012:10
anon:$ANON_INODE:10.77.3.2:5021:2 anon:$ANON_INODE:fd77:3::2:5022:10"
# Sockets made: a server and a client end per connection.
SOCKETS_MADE=12
check_eq "all 6 connections are established (ss, client ends)" 6 "$($SS -Htn state established | awk '$4 ~ /:50[0-2][12]$/' | wc -l | tr -d ' ')"

# --- the rows -----------------------------------------------------------------
server_rows() { # server_rows INODE PORT
	rows "f(\"netns_inode\") == \"$1\" && f(\"idiag_sport\") == \"$2\" && f(\"idiag_state\") == \"1\""
}
client_rows() { # client_rows PORT FAMILY ADDRESS
	rows "f(\"netns_inode\") == \"$ROOT_INODE\" && f(\"idiag_dport\") == \"$1\" && f(\"idiag_state\") == \"1\" && f(\"idiag_family\") == \"$2\" && f(\"idiag_dst\") == \"$3\""
}
all_connections_seen() {
	for c in $CONNS; do
		_inode=$(echo "$c" | cut -d: -f2)
		_port=$(echo "$c" | awk -F: '{ print $(NF-1) }')
		server_rows "$_inode" "$_port" | grep -q . || return 1
	done
}
check "every connection's server end shows up in the rows" wait_for "$WAIT" all_connections_seen
log "$(wc -l <"$XTCP2_ROWS" 2>/dev/null | tr -d ' ') rows so far"

rows_are_json() { [ -s "$XTCP2_ROWS" ] && [ "$(count_rows '!/^\{.*\}$/')" -eq 0 ]; }
check "rows were written, each one JSON object" rows_are_json

for c in $CONNS; do
	kind=${c%%:*}
	rest=${c#*:}
	inode=${rest%%:*}
	rest=${rest#*:}
	family=${rest##*:}
	rest=${rest%:*}
	port=${rest##*:}
	addr=${rest%:*}
	last=$(server_rows "$inode" "$port" | tail -n 1)
	if [ -z "$last" ]; then
		fail "$kind port $port: server end in netns $inode"
		continue
	fi
	pass "$kind port $port: server end in netns $inode"
	rtt=$(echo "$last" | field tcpi_rtt)
	cwnd=$(echo "$last" | field tcpi_snd_cwnd)
	check_ge "$kind port $port: tcpi_rtt > 0" "$rtt" 1
	check_ge "$kind port $port: tcpi_snd_cwnd > 0" "$cwnd" 1
	case $kind in
	named) want_name=$NAMED ;;
	docker) want_name=$DOCKER_ID ;;
	*) want_name="" ;;
	esac
	if [ -n "$want_name" ]; then
		name=$(echo "$last" | field netns_name)
		case $name in
		*"$want_name"*) pass "$kind port $port: netns_name '$name' names $want_name" ;;
		*) fail "$kind port $port: netns_name '$name' should name $want_name" ;;
		esac
	fi
	check "$kind port $port: client end (family $family, to $addr) in the root netns" \
		sh -c "[ -n \"\$1\" ]" - "$(client_rows "$port" "$family" "$addr" | tail -n 1)"
done

# --- the metrics --------------------------------------------------------------
check_ge "xtcp2_sockets_decoded_total counts the sockets made" "$(metric xtcp2_sockets_decoded_total)" "$SOCKETS_MADE"
check_ge "xtcp2_poll_cycles_total counts polls" "$(metric xtcp2_poll_cycles_total)" 2
active_before=$(metric xtcp2_netns_active)
check_ge "xtcp2_netns_active counts root, named, docker and anonymous" "$active_before" 4
check_ge "xtcp2_envelope_rows_flushed_total counts rows written" "$(metric xtcp2_envelope_rows_flushed_total)" "$SOCKETS_MADE"

# --- a deleted namespace is dropped -------------------------------------------
for p in $($IP netns pids "$NAMED"); do kill "$p" 2>/dev/null; done
$IP netns del "$NAMED"
log "deleted $NAMED (inode $NAMED_INODE)"
active_dropped() { _a=$(metric xtcp2_netns_active); [ -n "$_a" ] && [ "$_a" -lt "${active_before:-0}" ]; }
check "xtcp2_netns_active drops below $active_before" wait_for "$WAIT" active_dropped
# Rows of polls that began before the deletion may still arrive: look only
# at what comes after two more periods.
sleep $((2 * FREQ_S + 1))
mark=$(wc -l <"$XTCP2_ROWS" | tr -d ' ')
sleep $((3 * FREQ_S + 1))
tail -n +"$((mark + 1))" "$XTCP2_ROWS" >/tmp/xtcp2-rows-after-delete.jsonl
check "polling goes on after the deletion (docker rows keep coming)" \
	[ "$(count_rows "f(\"netns_inode\") == \"$DOCKER_INODE\"" /tmp/xtcp2-rows-after-delete.jsonl)" -gt 0 ]
check_eq "no rows from the deleted namespace" 0 \
	"$(count_rows "f(\"netns_inode\") == \"$NAMED_INODE\"" /tmp/xtcp2-rows-after-delete.jsonl)"

# --- SIGHUP reopens the file destination --------------------------------------
# What logrotate does: move the file away, signal, expect a new file.
mv "$XTCP2_ROWS" "$XTCP2_ROWS.rotated" 2>/dev/null
if [ "$XTCP2_START" = systemd ]; then
	# What an operator or logrotate's postrotate does: the unit's
	# ExecReload sends SIGHUP, which must never stop the daemon.
	systemctl reload "$XTCP2_UNIT"
else
	kill -HUP "$DAEMON_PID"
fi
check "after SIGHUP the daemon writes a new $XTCP2_ROWS" wait_for "$WAIT" test -s "$XTCP2_ROWS"
size_then=$(wc -c <"$XTCP2_ROWS.rotated" | tr -d ' ')
sleep $((2 * FREQ_S + 1))
check_eq "after SIGHUP the moved file no longer grows" "$size_then" "$(wc -c <"$XTCP2_ROWS.rotated" | tr -d ' ')"
check "the daemon survives SIGHUP" daemon_running

# --- SIGTERM flushes and exits 0 ----------------------------------------------
WAIT_GUARD=""
if [ "$XTCP2_START" = systemd ]; then
	systemctl stop "$XTCP2_UNIT"
	status=$(systemctl show -p ExecMainStatus "$XTCP2_UNIT" | sed 's/^ExecMainStatus=//')
	check_eq "xtcp2 exits 0 on SIGTERM (systemctl stop)" 0 "$status"
else
	check "xtcp2 is still running before SIGTERM" daemon_running
	# A watchdog so that a daemon ignoring SIGTERM fails instead of hanging.
	(sleep 15; kill -KILL "$DAEMON_PID" 2>/dev/null) &
	watchdog=$!
	kill -TERM "$DAEMON_PID"
	wait "$DAEMON_PID"
	status=$?
	kill "$watchdog" 2>/dev/null
	DAEMON_PID=""
	check_eq "xtcp2 exits 0 on SIGTERM within 15 s" 0 "$status"
fi
check "the rows file ends with a complete line" sh -c '[ -s "$1" ] && [ "$(tail -c 1 "$1" | od -An -c | tr -d " ")" = "\\n" ]' - "$XTCP2_ROWS"
check "the last row is a complete JSON object" sh -c 'tail -n 1 "$1" | grep -q "^{.*}$"' - "$XTCP2_ROWS"

if [ "$FAILED" -gt 0 ]; then daemon_log; fi
finish
