# Builds the NixOS system of one scenario microVM (qemu through microvm.nix).
#
# The guest runs services.xtcp2 with the flavor's settings
# (microvms/flavors.nix), then runs microvms/scenarios/FLAVOR.sh once at
# boot from a oneshot unit. The script's output goes to the console (the
# terminal of `nix run .#microvm-FLAVOR`), followed by one line
#
#   xtcp2-microvm: scenario FLAVOR ended: result=success status=0
#
# (systemd's $SERVICE_RESULT and $EXIT_STATUS), and then the guest reboots,
# which makes qemu exit (the runner starts it with -no-reboot). qemu's own
# exit status does not carry the verdict: read the lines above.
#
# Usage: (import ./mkMicrovm.nix { inherit nixpkgs microvm system xtcp2Module; }) "lifecycle"
# returns the evaluated NixOS system; its .config.microvm.declaredRunner is
# the package with bin/microvm-run.
{ nixpkgs, microvm, system, xtcp2Module }:

flavor:

let
  spec = (import ./flavors.nix).${flavor};
  # Ports the guest's metrics listener is forwarded to, on the host's
  # loopback only: 19089 for index 1, 19090 for index 2, ...
  hostMetricsPort = 19088 + spec.index;
in
nixpkgs.lib.nixosSystem {
  modules = [
    microvm.nixosModules.microvm
    xtcp2Module
    spec.module
    ({ config, lib, pkgs, ... }:
      let
        scenario = import ./scenario.nix {
          inherit pkgs flavor;
          xtcp2 = config.services.xtcp2.package;
        };
      in
      {
        nixpkgs.hostPlatform = system;
        system.stateVersion = lib.trivial.release;
        networking.hostName = "xtcp2-${flavor}";

        microvm = {
          hypervisor = "qemu";
          vcpu = 2;
          mem = 1024;
          # Boot from the host's /nix/store over 9p instead of building a
          # store disk image for every change.
          shares = [{
            proto = "9p";
            tag = "ro-store";
            source = "/nix/store";
            mountPoint = "/nix/.ro-store";
          }];
          # User-mode networking: nothing leaves the host, and the metrics
          # endpoint can be scraped from it while the scenario runs:
          # curl http://127.0.0.1:${toString hostMetricsPort}/metrics
          interfaces = [{
            type = "user";
            id = "usernet";
            mac = "02:00:00:78:74:0${toString spec.index}";
          }];
          forwardPorts = [{
            from = "host";
            proto = "tcp";
            host.address = "127.0.0.1";
            host.port = hostMetricsPort;
            guest.port = 9088;
          }];
        };

        services.xtcp2.openFirewall = true;

        environment.systemPackages = [ scenario pkgs.iproute2 ];

        systemd.services.xtcp2-scenario = {
          description = "xtcp2 scenario ${flavor} (microvms/scenarios/${flavor}.sh)";
          wantedBy = [ "multi-user.target" ];
          # Ordering only: in capcheck-fail the daemon is meant to fail.
          after = [ "xtcp2.service" ];
          environment = spec.env;
          unitConfig = {
            # Either way the guest reboots, which ends qemu.
            SuccessAction = "reboot";
            FailureAction = "reboot";
          };
          serviceConfig = {
            Type = "oneshot";
            ExecStart = lib.getExe scenario;
            ExecStopPost = "${pkgs.writeShellScript "xtcp2-scenario-report" ''
              echo "xtcp2-microvm: scenario ${flavor} ended: result=$SERVICE_RESULT status=$EXIT_STATUS"
            ''}";
            StandardOutput = "journal+console";
            StandardError = "journal+console";
            # A scenario that hangs still ends the VM.
            TimeoutStartSec = "10min";
          };
        };
      })
  ];
}
