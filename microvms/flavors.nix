# The scenario flavors, defined once and shared by the microVMs
# (microvms/mkMicrovm.nix) and the NixOS VM tests (checks/vm-test.nix).
#
# Each flavor NAME has a script microvms/scenarios/NAME.sh and gives:
# - module: the NixOS settings of services.xtcp2 under test;
# - env: the environment the scenario script runs with (the daemon is the
#   xtcp2.service unit, so XTCP2_START is always "systemd");
# - serviceChecks: Python lines the NixOS VM test runs after the script,
#   about the unit itself (the scripts test the daemon, not the module);
# - index: a small number that keeps the microVMs' forwarded host ports and
#   MAC addresses apart, so both can run at once.
let
  stateRows = "/var/lib/xtcp2/rows.jsonl";

  commonEnv = {
    XTCP2_START = "systemd";
    XTCP2_ROWS = stateRows;
    XTCP2_PROM = "127.0.0.1:9088";
  };
in
{
  # Start, collect from namespaces created at run time, reload, stop.
  lifecycle = {
    index = 1;
    description = "xtcp2 lifecycle scenario: the module with a file destination and a 1s poll";
    module = {
      services.xtcp2 = {
        enable = true;
        destination = "file:${stateRows}";
        frequency = "1s";
        timeout = "500ms";
      };
    };
    # The script waits for polls in multiples of this.
    env = commonEnv // { XTCP2_FREQ_S = "1"; };
    serviceChecks = "";
  };

  # The capability check. The script runs the binary itself with
  # capabilities taken away by setpriv; the unit, started without
  # CAP_NET_ADMIN and CAP_SYS_ADMIN, must fail once with exit status 77,
  # name both capabilities in the journal and not be restarted.
  capcheck-fail = {
    index = 2;
    description = "xtcp2 capability-check scenario: the module without CAP_NET_ADMIN and CAP_SYS_ADMIN";
    module = { lib, options, ... }: {
      services.xtcp2 = {
        enable = true;
        destination = "file:${stateRows}";
        # The module's default list minus the two required capabilities,
        # so the soft ones still match whatever the default becomes.
        capabilities = lib.subtractLists
          [ "CAP_NET_ADMIN" "CAP_SYS_ADMIN" ]
          options.services.xtcp2.capabilities.default;
      };
    };
    env = commonEnv;
    serviceChecks = ''
      machine.wait_until_succeeds("systemctl is-failed --quiet xtcp2.service")
      status = machine.succeed("systemctl show --property=ExecMainStatus --value xtcp2.service").strip()
      assert status == "77", f"xtcp2.service exited {status}, expected 77"
      restarts = machine.succeed("systemctl show --property=NRestarts --value xtcp2.service").strip()
      assert restarts == "0", f"xtcp2.service was restarted {restarts} times after exit 77"
      machine.succeed("journalctl -u xtcp2.service --no-pager | grep -F 'xtcp2: missing capability CAP_NET_ADMIN: required for netlink inet_diag queries'")
      machine.succeed("journalctl -u xtcp2.service --no-pager | grep -F 'xtcp2: missing capability CAP_SYS_ADMIN: required for setns(CLONE_NEWNET) into each network namespace'")
    '';
  };
}
