# The OCI image of xtcp2 (issue 18): `nix build .#image` gives a script that
# streams the image to stdout; load it with
#   $(nix build --print-out-paths .#image) | docker load
# (or `podman load`, or push with skopeo from `docker-archive:/dev/stdin`).
#
# What is in it: the binary and CA certificates (for https:// destinations,
# Pyroscope and, later, TLS to brokers and object stores) and nothing else:
# no shell, no package manager. The HEALTHCHECK runs the binary's own
# `-healthcheck`, which probes /readyz of the local listener (the default
# `--prom-listen :9088`, on loopback) and exits 0 or 1, starting nothing.
#
# Called with callPackage from flake.nix; the arguments are nixpkgs'.
{ dockerTools, cacert, xtcp2 }:
let
  exe = "${xtcp2}/bin/xtcp2";
  # Docker's image config counts durations in nanoseconds.
  seconds = s: s * 1000000000;
in
dockerTools.streamLayeredImage {
  name = "xtcp2";
  tag = xtcp2.version;
  contents = [ cacert ];
  config = {
    Entrypoint = [ exe ];
    Env = [
      # rustls-native-certs reads the bundle this names; without it the
      # image's https:// destinations would fall back to webpki-roots.
      "SSL_CERT_FILE=${cacert}/etc/ssl/certs/ca-bundle.crt"
    ];
    ExposedPorts = { "9088/tcp" = { }; };
    Healthcheck = {
      Test = [ "CMD" exe "-healthcheck" ];
      Interval = seconds 30;
      Timeout = seconds 5;
      StartPeriod = seconds 30;
      Retries = 3;
    };
    Labels = {
      "org.opencontainers.image.title" = "xtcp2";
      "org.opencontainers.image.description" = xtcp2.meta.description;
      "org.opencontainers.image.source" = xtcp2.meta.homepage;
      "org.opencontainers.image.version" = xtcp2.version;
      "org.opencontainers.image.licenses" = "MIT";
    };
  };
}
