"""An independent gRPC client of xtcp2 for tests/grpc.rs: Python grpcio with
stubs generated (grpc_tools.protoc) at run time from the repository's
proto/ files, which were written from the Go daemon's shared facts, so a
name, number or type that differs from them fails here.

usage: client.py PROTO_DIR ADDR COMMAND [ARGS...]; prints one JSON value.
  reflect                  services listed by server reflection (v1alpha)
  health                   grpc.health.v1 status of "" (the whole server)
  call METHOD JSON         a ConfigService call; {"ok": response} or {"code", "details"}
  listen SECONDS           FlatRecords for SECONDS: records' timestamps and count
  stall_and_listen SECONDS one FlatRecords stream never read, another read for SECONDS
  poll N                   PollFlatRecords: N requests, the records of each
  many_listen CLIENTS SECONDS  CLIENTS concurrent FlatRecords streams, each read for SECONDS
"""
import importlib
import json
import os
import sys
import tempfile
import threading
import time

import grpc
from google.protobuf import json_format
from grpc_tools import protoc

PROTO_DIR, ADDR, COMMAND, ARGS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]


def load_stubs():
    out = tempfile.mkdtemp(prefix="xtcp2-grpc-stubs-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    files = ["xtcp_config_v1.proto", "xtcp_flat_record_v1.proto"]
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"] + files)
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    mods = {name: importlib.import_module(name) for name in
            ["xtcp_config_v1_pb2", "xtcp_config_v1_pb2_grpc", "xtcp_flat_record_v1_pb2", "xtcp_flat_record_v1_pb2_grpc"]}
    return mods, out


def channel(stalled=False):
    options = [("grpc.use_local_subchannel_pool", 1)]
    if stalled:
        # No window growth: a client that does not read stops the server
        # after the default 64 KiB, as a slow consumer would.
        options += [("grpc.http2.bdp_probe", 0)]
    return grpc.insecure_channel(ADDR, options=options)


def main():
    if COMMAND == "reflect":
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
        stub = reflection_pb2_grpc.ServerReflectionStub(channel())
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        names = []
        for resp in stub.ServerReflectionInfo(iter([req]), timeout=10):
            names += [s.name for s in resp.list_services_response.service]
        # The record service's file, by symbol: the descriptor is served too.
        req = reflection_pb2.ServerReflectionRequest(file_containing_symbol="xtcp_config.v1.ConfigService")
        files = 0
        for resp in stub.ServerReflectionInfo(iter([req]), timeout=10):
            files += len(resp.file_descriptor_response.file_descriptor_proto)
        return {"services": sorted(names), "config_service_files": files}
    mods, _ = load_stubs()
    cfg, cfg_grpc = mods["xtcp_config_v1_pb2"], mods["xtcp_config_v1_pb2_grpc"]
    rec, rec_grpc = mods["xtcp_flat_record_v1_pb2"], mods["xtcp_flat_record_v1_pb2_grpc"]
    if COMMAND == "health":
        # grpc.health.v1.Health/Check by hand: an empty HealthCheckRequest
        # (service "") and the response's field 1, the status enum.
        check = channel().unary_unary("/grpc.health.v1.Health/Check",
                                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
        raw = check(b"", timeout=10)
        status = raw[1] if len(raw) >= 2 and raw[0] == 0x08 else 0
        return {"status": {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING"}.get(status, str(status))}
    if COMMAND == "call":
        method, body = ARGS[0], json.loads(ARGS[1])
        stub = cfg_grpc.ConfigServiceStub(channel())
        request = getattr(cfg, f"{method}Request")()
        json_format.ParseDict(body, request)
        try:
            response = getattr(stub, method)(request, timeout=10)
            return {"ok": json_format.MessageToDict(response)}
        except grpc.RpcError as e:
            return {"code": e.code().name, "details": e.details()}
    if COMMAND == "listen":
        seconds = float(ARGS[0])
        stub = rec_grpc.XTCPFlatRecordServiceStub(channel())
        call = stub.FlatRecords(rec.FlatRecordsRequest())
        stamps = []
        threading.Timer(seconds, call.cancel).start()
        try:
            for r in call:
                stamps.append(r.xtcp_flat_record.timestamp_ns)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise
        return {"count": len(stamps), "timestamps": stamps}
    if COMMAND == "stall_and_listen":
        seconds = float(ARGS[0])
        stalled = rec_grpc.XTCPFlatRecordServiceStub(channel(stalled=True)).FlatRecords(rec.FlatRecordsRequest())
        # Started, never read: the stream is open on the server.
        time.sleep(0.5)
        stub = rec_grpc.XTCPFlatRecordServiceStub(channel())
        call = stub.FlatRecords(rec.FlatRecordsRequest())
        stamps = []
        threading.Timer(seconds, call.cancel).start()
        try:
            for r in call:
                stamps.append(r.xtcp_flat_record.timestamp_ns)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise
        stalled.cancel()
        return {"count": len(stamps), "timestamps": stamps}
    if COMMAND == "poll":
        n = int(ARGS[0])
        stub = rec_grpc.XTCPFlatRecordServiceStub(channel())
        requests = iter([rec.PollFlatRecordsRequest() for _ in range(n)])
        call = stub.PollFlatRecords(requests)
        stamps = []
        threading.Timer(20, call.cancel).start()
        for r in call:
            stamps.append(r.xtcp_flat_record.timestamp_ns)
        return {"count": len(stamps), "timestamps": stamps}
    if COMMAND == "many_listen":
        clients, seconds = int(ARGS[0]), float(ARGS[1])
        counts = [0] * clients
        errors = []

        def listen(i):
            try:
                call = rec_grpc.XTCPFlatRecordServiceStub(channel()).FlatRecords(rec.FlatRecordsRequest())
                threading.Timer(seconds, call.cancel).start()
                for _ in call:
                    counts[i] += 1
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    errors.append(str(e))

        threads = [threading.Thread(target=listen, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"counts": counts, "errors": errors}
    raise SystemExit(f"unknown command {COMMAND}")


print(json.dumps(main()))
