# One scenario script from microvms/scenarios/ as a command,
# `xtcp2-scenario-FLAVOR`, with the tools it calls on its PATH.
#
# The scripts themselves live only under microvms/scenarios/ (they also run
# outside Nix, see microvms/run); this file only wraps them. Their interface:
# XTCP2_BIN, XTCP2_START, XTCP2_ROWS, XTCP2_PROM, IP, SS, SETPRIV and NC in
# the environment (see microvms/scenarios/lib.sh), and a last line
# "N passed, M failed" with a non-zero exit status when M > 0.
{ pkgs, xtcp2, flavor }:

pkgs.writeShellApplication {
  name = "xtcp2-scenario-${flavor}";
  runtimeInputs = [
    xtcp2
    pkgs.bash
    pkgs.coreutils
    pkgs.curl
    pkgs.findutils
    pkgs.gawk
    pkgs.gnugrep
    pkgs.gnused
    pkgs.iproute2
    pkgs.jq
    pkgs.procps
    pkgs.prometheus.cli # promtool check metrics
    pkgs.python3
    pkgs.socat
    pkgs.systemd
    pkgs.util-linux # setpriv, nsenter, unshare, setsid, mount
  ];
  # Runs the script with bash rather than pasting it in here, so it does not
  # inherit the errexit/nounset/pipefail that writeShellApplication sets (the
  # scenarios count failures and carry on). The whole scenarios directory is
  # copied, so a script can source helpers that sit beside it.
  text = ''
    export XTCP2_BIN="''${XTCP2_BIN:-${pkgs.lib.getExe xtcp2}}"
    export IP="''${IP:-${pkgs.iproute2}/bin/ip}"
    export SS="''${SS:-${pkgs.iproute2}/bin/ss}"
    export SETPRIV="''${SETPRIV:-${pkgs.util-linux}/bin/setpriv}"
    # The scripts speak busybox nc (nc -l -p PORT). Only nc is taken from
    # busybox: on PATH its other applets would shadow the GNU tools.
    export NC="''${NC:-${pkgs.busybox}/bin/nc}"
    exec ${pkgs.bash}/bin/bash ${./scenarios}/${flavor}.sh "$@"
  '';
}
