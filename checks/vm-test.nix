# One scenario flavor as a NixOS VM test (pkgs.testers.runNixOSTest): the
# machine imports the xtcp2 module with the flavor's settings
# (microvms/flavors.nix), and the test script runs the same
# microvms/scenarios/FLAVOR.sh as the microVM does, against the
# xtcp2.service unit (XTCP2_START=systemd).
#
# Run one with: nix build .#checks.x86_64-linux.vm-lifecycle -L
{ pkgs, xtcp2Module, flavor }:

let
  inherit (pkgs) lib;
  spec = (import ../microvms/flavors.nix).${flavor};
  envArgs = lib.escapeShellArgs (lib.mapAttrsToList (name: value: "${name}=${value}") spec.env);
in
pkgs.testers.runNixOSTest {
  name = "xtcp2-${flavor}";

  nodes.machine = { config, ... }: {
    imports = [ xtcp2Module spec.module ];
    virtualisation = {
      cores = 2;
      memorySize = 1024;
    };
    environment.systemPackages = [
      (import ../microvms/scenario.nix {
        inherit pkgs flavor;
        xtcp2 = config.services.xtcp2.package;
      })
      pkgs.iproute2
    ];
  };

  testScript = ''
    machine.wait_for_unit("multi-user.target")
    # The scenario prints its checks and ends with "N passed, M failed";
    # it exits non-zero when M > 0, which fails machine.succeed.
    print(machine.succeed("env ${envArgs} xtcp2-scenario-${flavor} 2>&1"))
    ${spec.serviceChecks}
  '';
}
