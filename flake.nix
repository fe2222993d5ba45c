{
  description = "xtcp2: streams the kernel's per-socket TCP state (inet_diag) from every network namespace";

  # Must stay exactly as pinned by flake.lock (names and follows), or Nix
  # re-locks, which it cannot do without network access to the inputs.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
    microvm = {
      url = "github:astro/microvm.nix";
      inputs.nixpkgs.follows = "nixpkgs";
      inputs.flake-utils.follows = "flake-utils";
    };
  };

  outputs = { self, nixpkgs, flake-utils, microvm }:
    let
      inherit (nixpkgs) lib;

      # Scenario flavors (microVMs and VM tests); see microvms/flavors.nix.
      flavors = import ./microvms/flavors.nix;

      # The daemon. A function for callPackage, so the overlay builds it with
      # the consumer's nixpkgs and packages.* with ours.
      xtcp2Package = { lib, rustPlatform, pkg-config, openssl, zlib }:
        let
          cargoToml = lib.importTOML ./Cargo.toml;
        in
        rustPlatform.buildRustPackage {
          pname = cargoToml.package.name;
          inherit (cargoToml.package) version;

          # Everything but the Nix/CI wrapping, so editing a .nix file does
          # not rebuild the daemon. docs/ stays in: tests may check it.
          src = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.difference ./. (lib.fileset.unions (map lib.fileset.maybeMissing [
              ./flake.nix
              ./flake.lock
              ./nixos
              ./microvms
              ./checks
              ./ci
              ./.ci
              ./.git
              ./target
              ./result # nix build's output link
            ]));
          };

          cargoLock.lockFile = ./Cargo.lock;

          # The kafka: destination's librdkafka is built from the sources
          # bundled in the rdkafka crate (2.12.1; nixpkgs' rdkafka is not
          # linked, so every build runs the same client); its ./configure
          # finds OpenSSL and zlib with pkg-config.
          nativeBuildInputs = [ pkg-config ];
          buildInputs = [ openssl zlib ];

          # build.rs compiles the .proto files with protox (pure Rust), so no
          # protoc is needed. `cargo test` runs as usual: the tests that need
          # root or network namespaces skip themselves unless
          # XTCP2_ROOT_TESTS=1 or they run as root, and the Nix sandbox is
          # neither.

          meta = {
            description = "Streams Linux per-socket TCP state (netlink inet_diag) from every network namespace to files, sockets and HTTP, with Prometheus metrics";
            homepage = "https://github.com/randomizedcoder/xtcp2";
            license = lib.licenses.mit;
            mainProgram = "xtcp2";
            platforms = lib.platforms.linux;
          };
        };
    in
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ]
      (system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          xtcp2 = pkgs.callPackage xtcp2Package { };

          xtcp2Module = self.nixosModules.default;

          mkMicrovm = import ./microvms/mkMicrovm.nix {
            inherit nixpkgs microvm system xtcp2Module;
          };
          microvmRunners = lib.mapAttrs'
            (flavor: _: lib.nameValuePair "microvm-${flavor}" (mkMicrovm flavor).config.microvm.declaredRunner)
            flavors;

          vmTests = lib.mapAttrs'
            (flavor: _: lib.nameValuePair "vm-${flavor}" (import ./checks/vm-test.nix {
              inherit pkgs flavor xtcp2Module;
            }))
            flavors;

          # Only the .nix files, for the lint checks.
          nixFiles = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ./.;
          };
        in
        {
          packages = {
            inherit xtcp2;
            default = xtcp2;
            # The OCI image: nixos/image.nix says how to load it.
            image = pkgs.callPackage ./nixos/image.nix { inherit xtcp2; };
          } // microvmRunners;

          # nix run .#microvm-lifecycle / .#microvm-capcheck-fail
          apps = lib.mapAttrs
            (name: runner: {
              type = "app";
              program = "${runner}/bin/microvm-run";
              meta.description = "Boot the ${name} scenario VM; it runs the scenario once and exits";
            })
            microvmRunners;

          checks = {
            inherit xtcp2;

            nixpkgs-fmt = pkgs.runCommand "xtcp2-nixpkgs-fmt-check" { nativeBuildInputs = [ pkgs.nixpkgs-fmt ]; } ''
              nixpkgs-fmt --check ${nixFiles}
              touch $out
            '';

            deadnix = pkgs.runCommand "xtcp2-deadnix-check" { nativeBuildInputs = [ pkgs.deadnix ]; } ''
              deadnix --fail ${nixFiles}
              touch $out
            '';
          } // vmTests;

          devShells.default = pkgs.mkShell {
            # GNU tools ahead of busybox, whose applets would otherwise
            # shadow them on PATH.
            packages = [
              pkgs.cargo
              pkgs.rustc
              pkgs.clippy
              pkgs.rustfmt
              pkgs.coreutils
              pkgs.gnugrep
              pkgs.gnused
              pkgs.findutils
              pkgs.procps
              pkgs.iproute2
              pkgs.qemu
              pkgs.prometheus.cli # promtool
              pkgs.nixpkgs-fmt
              pkgs.deadnix
              pkgs.python3
              pkgs.busybox
            ];
            RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
          };

          formatter = pkgs.nixpkgs-fmt;
        })
    // {
      overlays.default = final: _prev: {
        xtcp2 = final.callPackage xtcp2Package { };
      };

      # The module, with its package defaulting to this flake's build.
      nixosModules = {
        xtcp2 = { lib, pkgs, ... }: {
          imports = [ ./nixos/module.nix ];
          services.xtcp2.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.xtcp2;
        };
        default = self.nixosModules.xtcp2;
      };
    };
}
