# NixOS module for xtcp2: `services.xtcp2`.
#
# Runs the daemon as a systemd service under a dynamic (non-root) user that
# holds only the capabilities it needs as ambient capabilities, with as much
# systemd sandboxing as the job allows. The job itself (setns(CLONE_NEWNET)
# into every network namespace on the host and asking each one's kernel for
# its sockets over netlink) rules a few settings out; each one left out is
# listed below with the reason.
#
# The flags passed are the idiomatic `--kebab-case` spellings pinned in
# docs/contract.md.
{ config, lib, pkgs, utils, ... }:

let
  cfg = config.services.xtcp2;

  # The formats and destination schemes the binary registers, generated
  # from its registries (tests/docs_generated.rs keeps the file current).
  registry = import ./registry.nix;
  destScheme = lib.head (lib.splitString ":" cfg.destination);

  # The capability check exits with this (EX_NOPERM) when CAP_NET_ADMIN or
  # CAP_SYS_ADMIN is missing; see docs/contract.md.
  exitNoPerm = 77;

  isFileDest = lib.hasPrefix "file:" cfg.destination;
  fileDestPath = lib.removePrefix "file:" cfg.destination;

  # Directories systemd creates and hands to the dynamic user.
  stateDir = "/var/lib/xtcp2";
  logsDir = "/var/log/xtcp2";
  underManagedDir = path:
    lib.hasPrefix "${stateDir}/" path || lib.hasPrefix "${logsDir}/" path;

  # ":9088", "0.0.0.0:9088" and "[::]:9088" all end in the port.
  promPort = lib.toInt (lib.last (lib.splitString ":" cfg.promListen));
  promLoopback = lib.any (prefix: lib.hasPrefix prefix cfg.promListen) [ "127." "[::1]:" "localhost:" ];

  nonEmptyFlag = flag: value: lib.optional (value != "") "--${flag}=${value}";

  args = [
    "--frequency=${cfg.frequency}"
    "--timeout=${cfg.timeout}"
    "--dest=${cfg.destination}"
    "--deserializers=${cfg.deserializers}"
    "--netlinkers=${toString cfg.netlinkers}"
    "--prom-listen=${cfg.promListen}"
    "--prom-path=${cfg.promPath}"
  ]
  ++ lib.optional (cfg.marshal != null) "--marshal=${cfg.marshal}"
  ++ lib.optionals (cfg.flows.emit == "changed") [
    "--emit=changed"
    "--emit-heartbeat=${toString cfg.flows.heartbeatPolls}"
  ]
  ++ lib.optional cfg.flows.events "--flow-events"
  ++ lib.optional cfg.flows.rates "--rates"
  ++ lib.optional cfg.attribution.resolveContainerId "--resolve-container-id"
  ++ lib.optionals (cfg.attribution.dockerSocket != null) [
    "--enrich-container"
    "--docker-socket=${cfg.attribution.dockerSocket}"
  ]
  ++ lib.optional cfg.attribution.populateNsid "--populate-nsid"
  ++ lib.optional cfg.attribution.enrichNic "--enrich-nic"
  ++ lib.optionals (cfg.attribution.lldpdSocket != null) [
    "--enrich-lldp"
    "--lldpd-socket=${cfg.attribution.lldpdSocket}"
    "--lldpcli=${pkgs.lldpd}/bin/lldpcli"
  ]
  ++ lib.optional (cfg.attribution.uplinkInterfaces != [ ])
    "--uplink-interfaces=${lib.concatStringsSep "," cfg.attribution.uplinkInterfaces}"
  ++ nonEmptyFlag "pprof-listen" cfg.pprofListen
  ++ nonEmptyFlag "grpc-listen" cfg.grpc.listen
  ++ lib.optionals (cfg.grpc.tls.certificate != null) [
    "--grpc-tls-cert=${cfg.grpc.tls.certificate}"
    "--grpc-tls-key=${cfg.grpc.tls.key}"
  ]
  ++ lib.optional (cfg.grpc.tls.clientCa != null) "--grpc-tls-client-ca=${cfg.grpc.tls.clientCa}"
  ++ nonEmptyFlag "label" cfg.labels.label
  ++ nonEmptyFlag "tag" cfg.labels.tag
  ++ nonEmptyFlag "location" cfg.labels.location
  ++ cfg.extraArgs;

  # A string rather than a list: an empty list would leave the setting out
  # of the unit (meaning "no limit"), while the empty string means "none".
  capabilityString = lib.concatStringsSep " " cfg.capabilities;

  # The alerting and recording rules (tests/alerts.rs holds them to a real
  # Prometheus). They assume a 10 s poll period: the daemon does not export
  # its --frequency, so the rules file records it as a setting.
  rulesFile = ../deploy/prometheus/xtcp2-rules.yml;
  rulesPeriod = "10s";
  loadsOurRules = lib.elem cfg.prometheusRules (config.services.prometheus.ruleFiles or [ ]);
in
{
  options.services.xtcp2 = {
    enable = lib.mkEnableOption "xtcp2, which streams the kernel's per-socket TCP state from every network namespace";

    package = lib.mkPackageOption pkgs "xtcp2" {
      extraDescription = ''
        The flake's `nixosModules.default` sets this to the flake's own build,
        so `pkgs.xtcp2` only has to exist when this file is imported directly
        (for example with the flake's `overlays.default`).
      '';
    };

    frequency = lib.mkOption {
      type = lib.types.str;
      default = "10s";
      example = "500ms";
      description = ''
        Poll period (`--frequency`): `500ms`, `10s`, `1m`, or bare seconds.
      '';
    };

    timeout = lib.mkOption {
      type = lib.types.str;
      default = "5s";
      example = "2s";
      description = ''
        Per-namespace dump timeout (`--timeout`); must be shorter than
        {option}`services.xtcp2.frequency`.
      '';
    };

    destination = lib.mkOption {
      type = lib.types.str;
      default = "file:${stateDir}/rows.jsonl";
      example = "udp:127.0.0.1:13000";
      description = ''
        Where records go (`--dest`): one of the forms in
        `docs/outputs.md` (generated from the destination registry), e.g.
        `file:PATH`, `tcp:HOST:PORT` or `https://...`. Its scheme must be
        one of ${lib.concatStringsSep ", " registry.destinationSchemes}.

        A `file:` path must be absolute. Under `${stateDir}` or `${logsDir}`
        it is writable as is (systemd creates both for the service's dynamic
        user); anywhere else its directory is made writable for the service
        with `ReadWritePaths`, but it must already exist and be writable by
        the dynamic user `xtcp2`. `systemctl reload xtcp2` sends SIGHUP, which
        reopens the file (for log rotation).

        `stdout`/`stderr` send every record into the journal, which is rarely
        what you want on a busy host.

        `kafka:BROKER:PORT[,BROKER:PORT...]` produces one message per
        envelope; its flags (`--topic`, `--kafka-compression`, `--kafka-key`,
        `--kafka-option KEY=VALUE`) go in {option}`services.xtcp2.extraArgs`
        (see `docs/outputs.md`; a secret in `--kafka-option` is visible in
        the unit file, so prefer librdkafka's file-based settings such as
        `ssl.key.location`).
      '';
    };

    marshal = lib.mkOption {
      type = lib.types.nullOr (lib.types.enum registry.formats);
      default = null;
      example = "protobufList";
      description = ''
        Record encoding (`--marshal`); `null` leaves it to the daemon:
        jsonl, or protobufList for a `kafka:` destination.
      '';
    };

    deserializers = lib.mkOption {
      type = lib.types.str;
      default = "default";
      example = "all";
      description = ''
        Which netlink attributes to decode (`--deserializers`): `default`,
        `all`, the empty string for none, or a comma-separated list.
      '';
    };

    netlinkers = lib.mkOption {
      type = lib.types.ints.positive;
      default = 4;
      example = 8;
      description = "Network namespaces dumped in parallel (`--netlinkers`).";
    };

    flows = {
      emit = lib.mkOption {
        type = lib.types.enum [ "all" "changed" ];
        default = "all";
        description = ''
          `all` sends every socket every poll; `changed` sends a socket when
          it first appears, when it changed and every
          {option}`heartbeatPolls` polls (`--emit`; see docs/flows.md for
          what counts as a change).
        '';
      };
      heartbeatPolls = lib.mkOption {
        type = lib.types.ints.between 1 10000;
        default = 10;
        description = "With `emit = \"changed\"`, an unchanged socket is still sent every this many polls (`--emit-heartbeat`).";
      };
      events = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = ''
          Mark each socket's first record `flow_event = open` and send one
          `flow_event = close` record when it ends, from the kernel's
          sock_diag destroy notifications (`--flow-events`).
        '';
      };
      rates = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Per-second deltas of bytes, segments and retransmissions since the socket's previous poll (`--rates`).";
      };
    };

    attribution = {
      resolveContainerId = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = ''
          Attribute each socket to its container, Kubernetes pod or systemd
          unit from its cgroup v2 path (`--resolve-container-id`; reads
          `/sys/fs/cgroup`, which the unit sees read-only).
        '';
      };
      dockerSocket = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/run/docker.sock";
        description = ''
          Add each container's name and image from the Docker Engine at
          this socket (`--enrich-container --docker-socket`). The unit's
          dynamic user must be allowed to connect: the unit joins the
          `docker` group when this is set.
        '';
      };
      populateNsid = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = ''
          Stamp each record with its namespace's nsid as the host knows it
          (`--populate-nsid`; read-only, none is assigned).
        '';
      };
      enrichNic = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = ''
          Stamp every record with the uplink NICs' driver, model, PCI ids,
          bus address, speed and firmware (`--enrich-nic`).
        '';
      };
      uplinkInterfaces = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "eno1" "eno2" ];
        description = ''
          The uplinks, in slot order (`--uplink-interfaces`); empty: the
          interfaces of the default routes.
        '';
      };
      lldpdSocket = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/run/lldpd.socket";
        description = ''
          Add each uplink's LLDP neighbour from the lldpd at this socket
          (`--enrich-lldp --lldpd-socket`, read with lldpd's `lldpcli`).
          The unit's dynamic user must be allowed to connect to it.
        '';
      };
    };

    promListen = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1:9088";
      example = "10.0.0.5:9088";
      description = ''
        Listen address for `/metrics`, `/healthz` and `/readyz`
        (`--prom-listen`). The empty string disables the listener.

        The default is loopback: only local agents can scrape it. To let a
        Prometheus on another host scrape, give the address it reaches
        (`10.0.0.5:9088`) and set {option}`services.xtcp2.openFirewall`.
        `:9088` (the daemon's own default and the Go xtcp2's spelling) binds
        every address of the host: anyone who can reach the host then reads
        the metrics (host name, labels, namespace counts, version).
      '';
    };

    pprofListen = lib.mkOption {
      type = lib.types.str;
      default = "";
      example = "127.0.0.1:6060";
      description = ''
        Serve the CPU and heap profiles (`/debug/pprof/*`) on a listener of
        their own at this address (`--pprof-listen`); the empty string
        serves them nowhere. Keep it on loopback: a profile costs about
        110 MB while it runs and 20 MB that stay, and anyone who reaches the
        port can take one. The firewall is never opened for it.
      '';
    };

    grpc = {
      listen = lib.mkOption {
        type = lib.types.str;
        default = "";
        example = "127.0.0.1:8889";
        description = ''
          Serve the Go daemon's gRPC services (runtime control with
          `xtcp2 ctl`, live records with `xtcp2 client`) at this address
          (`--grpc-listen`); the empty string (the default) serves nothing.
          Anyone who reaches the port can change the poll cadence and read
          every socket of the host: keep it on loopback, or set
          {option}`services.xtcp2.grpc.tls.clientCa` for another address.
          The firewall is never opened for it.
        '';
      };
      tls = {
        certificate = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default = null;
          description = "PEM certificate chain of the gRPC listener (`--grpc-tls-cert`); serves TLS with {option}`services.xtcp2.grpc.tls.key`.";
        };
        key = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default = null;
          description = "PEM private key of the gRPC listener (`--grpc-tls-key`). Not a store path: the Nix store is world-readable.";
        };
        clientCa = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default = null;
          description = "PEM CA certificates; gRPC clients must present a certificate one of them signed (`--grpc-tls-client-ca`, mutual TLS).";
        };
      };
    };

    promPath = lib.mkOption {
      type = lib.types.str;
      default = "/metrics";
      description = "HTTP path of the Prometheus metrics (`--prom-path`).";
    };

    labels = {
      label = lib.mkOption {
        type = lib.types.str;
        default = "";
        example = "prod";
        description = "Stamped on every record (`--label`); empty leaves it out.";
      };
      tag = lib.mkOption {
        type = lib.types.str;
        default = "";
        example = "edge-proxies";
        description = "Stamped on every record (`--tag`); empty leaves it out.";
      };
      location = lib.mkOption {
        type = lib.types.str;
        default = "";
        example = "fra1";
        description = "Stamped on every record (`--location`); empty leaves it out.";
      };
    };

    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "--states=established,listen" "--poll-jitter=2s" ];
      description = ''
        Further command-line arguments, appended after the ones generated from
        the options above (see docs/contract.md for the full list).
      '';
    };

    environmentFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/run/secrets/xtcp2.env";
      description = ''
        File of `NAME=value` lines loaded into the service's environment, for
        settings that must stay out of the world-readable Nix store, such as
        `PYROSCOPE_URL` with credentials in it. systemd reads it as root
        before dropping privileges, so it can be readable by root only. Give
        it as a string path so it is not copied into the store.
      '';
    };

    capabilities = lib.mkOption {
      type = lib.types.listOf (lib.types.strMatching "CAP_[A-Z_]+");
      default = [ "CAP_NET_ADMIN" "CAP_SYS_ADMIN" "CAP_SYS_PTRACE" "CAP_NET_RAW" "CAP_SYS_RESOURCE" ];
      description = ''
        Capabilities given to the (non-root) service, as both its ambient set
        and its bounding set; everything else is dropped.

        - `CAP_NET_ADMIN`: netlink inet_diag queries (required).
        - `CAP_SYS_ADMIN`: setns(CLONE_NEWNET) into each network namespace
          (required).
        - `CAP_SYS_PTRACE`: open /proc/PID/ns/net of other users' processes.
        - `CAP_NET_RAW`, `CAP_SYS_RESOURCE`: optional; the daemon logs a
          warning and runs on without them.

        Without either required capability the daemon exits with status
        ${toString exitNoPerm} and systemd does not restart it.
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Open the TCP port of {option}`services.xtcp2.promListen` in the
        firewall, for a Prometheus on another host. Useful only with a
        non-loopback {option}`services.xtcp2.promListen`; with `:9088` it
        exposes the metrics to every network the host is on.
      '';
    };

    prometheusRules = lib.mkOption {
      type = lib.types.path;
      default = rulesFile;
      defaultText = lib.literalMD "`deploy/prometheus/xtcp2-rules.yml` of this xtcp2";
      readOnly = true;
      description = ''
        The Prometheus rules shipped with xtcp2: its alerts (each linking to
        its section of `docs/runbook.md`) and the recording rules the Grafana
        dashboard reads. Load them with one line on the host that runs
        Prometheus:

            services.prometheus.ruleFiles = [ config.services.xtcp2.prometheusRules ];

        The rules expect the scrape job to be named `xtcp2` and every
        collector to poll every 10 s (the default
        {option}`services.xtcp2.frequency`); the file's header says how to
        change either.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = isFileDest -> lib.hasPrefix "/" fileDestPath;
        message = "services.xtcp2.destination: a file: destination needs an absolute path (the service's file system is read-only elsewhere), got `${cfg.destination}`.";
      }
      {
        assertion = lib.elem destScheme registry.destinationSchemes;
        message = "services.xtcp2.destination: unknown scheme `${destScheme}` in `${cfg.destination}`; valid: ${lib.concatStringsSep ", " registry.destinationSchemes}.";
      }
      {
        assertion = (cfg.grpc.tls.certificate == null) == (cfg.grpc.tls.key == null);
        message = "services.xtcp2.grpc.tls.certificate and services.xtcp2.grpc.tls.key go together.";
      }
      {
        assertion = cfg.grpc.tls.clientCa != null -> cfg.grpc.tls.certificate != null;
        message = "services.xtcp2.grpc.tls.clientCa needs services.xtcp2.grpc.tls.certificate and key.";
      }
      {
        assertion = cfg.openFirewall -> cfg.promListen != "";
        message = "services.xtcp2.openFirewall needs services.xtcp2.promListen to be set.";
      }
    ];

    warnings = lib.optional (cfg.openFirewall && promLoopback)
      "services.xtcp2.openFirewall opens port ${toString promPort}, but services.xtcp2.promListen (`${cfg.promListen}`) is a loopback address: nothing outside the host can reach it."
    ++ lib.optional (loadsOurRules && cfg.frequency != rulesPeriod)
      "services.prometheus.ruleFiles loads services.xtcp2.prometheusRules, whose alerts assume a poll period of ${rulesPeriod}, but services.xtcp2.frequency is `${cfg.frequency}`: XTCP2PollStalled will misfire. Load a copy with the period setting (instance:xtcp2_poll_period_seconds:setting) changed instead.";

    # The promListen test keeps promPort unevaluated when the listener is
    # off, so the assertion above reports the mistake instead of toInt.
    networking.firewall.allowedTCPPorts = lib.mkIf (cfg.openFirewall && cfg.promListen != "") [ promPort ];

    systemd.services.xtcp2 = {
      description = "xtcp2: per-socket TCP state from every network namespace";
      documentation = [ "https://github.com/randomizedcoder/xtcp2" ];
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];

      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} ${utils.escapeSystemdExecArgs args}";
        # SIGHUP reopens a file: destination (log rotation).
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;

        Restart = "on-failure";
        RestartSec = "5s";
        # A missing capability is a configuration error: restarting cannot
        # fix it, so let the unit fail once with a clear message instead of
        # looping.
        RestartPreventExitStatus = exitNoPerm;

        # Not root: a throw-away user holding just the listed capabilities.
        DynamicUser = true;
        AmbientCapabilities = capabilityString;
        CapabilityBoundingSet = capabilityString;
        # Ambient capabilities survive execve() with this set.
        NoNewPrivileges = true;

        StateDirectory = "xtcp2";
        LogsDirectory = "xtcp2";
        ReadWritePaths = lib.optional
          (isFileDest && !(underManagedDir fileDestPath))
          (dirOf fileDestPath);
        UMask = "0027";
        SupplementaryGroups = lib.optional (cfg.attribution.dockerSocket != null) "docker";

        # One descriptor per open namespace plus one netlink socket per
        # netlinker: hosts with thousands of containers outgrow 1024.
        LimitNOFILE = 65536;
        # Tokio's blocking pool can grow to 512 threads on its own, on top of
        # the workers and netlinkers; the default share of pid_max can be
        # small on little VMs.
        TasksMax = 8192;

        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        LockPersonality = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        RemoveIPC = true;
        # No JIT anywhere in the daemon.
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        # AF_NETLINK: the inet_diag dumps. AF_UNIX: journald and unix:/
        # unixgram: destinations. AF_INET/AF_INET6: the metrics listener and
        # tcp:/udp:/http(s): destinations.
        RestrictAddressFamilies = [ "AF_NETLINK" "AF_UNIX" "AF_INET" "AF_INET6" ];
        # setns() is in @process and io_uring_* in @aio, both part of
        # @system-service. @privileged is not subtracted (the usual
        # "~@privileged") because it holds capset(), which the capability
        # check and any later capability drop use; the bounding set above
        # already limits what privileged calls can do.
        SystemCallFilter = [ "@system-service" "~@mount" "~@swap" "~@reboot" "~@module" "~@clock" "~@cpu-emulation" "~@obsolete" "~@raw-io" ];
        SystemCallErrorNumber = "EPERM";

        # Settings deliberately left out, and why:
        # - PrivateNetwork: would put the service in a fresh network
        #   namespace of its own, hiding the host's sockets and namespaces.
        # - PrivateUsers: runs the service in a new user namespace, where its
        #   capabilities mean nothing to the init namespace: inet_diag and
        #   setns() into the host's network namespaces would be refused.
        # - RestrictNamespaces: entering namespaces with setns(CLONE_NEWNET)
        #   is the job, and the filter covers setns() as well as unshare().
        #   (RestrictNamespaces = "net" would allow it only as long as every
        #   setns() call names CLONE_NEWNET rather than 0.)
        # - ProtectProc=invisible: hides /proc/PID of processes owned by
        #   other users, and with them their /proc/PID/ns/net.
        # - ProcSubset=pid: hides /proc/sys and /proc/net, which the daemon
        #   and its profiler may read.
        # - IPAddressAllow/IPAddressDeny: the destination is any host the
        #   operator names, so there is no fixed set to allow.
        # - TemporaryFileSystem/InaccessiblePaths over /run: the network
        #   namespaces bind-mounted under /run/netns and /run/docker/netns
        #   (also after the service started; mounts propagate into its
        #   mount namespace) must stay visible.
      };
    };
  };
}
