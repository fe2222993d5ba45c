"""Reads xtcp2's protobuf outputs with Google's protobuf library.

The classes come from protoc (grpcio-tools' bundled compiler) run on one of
the project's .proto files, so what this script reads is what any protobuf
consumer generated from that file reads.

    read_protobuf.py describe PROTO
        prints the FileDescriptorProto protoc made of PROTO, as JSON
    read_protobuf.py read PROTO FORMAT=PATH...
        FORMAT is protobufList (length-delimited Envelopes), protoJson (one
        Envelope per line, proto3 JSON) or protoText (text format, the whole
        file one Envelope); prints {FORMAT: [row, ...]} where a row maps every
        field the message has set to its value: integers and enums as
        numbers, strings as text, bytes as hex.

Used by tests/go_schema.rs; needs the protobuf and grpcio-tools modules.
"""

import importlib
import json
import os
import sys
import tempfile

from google.protobuf import descriptor_pb2, json_format, text_format
from grpc_tools import protoc


def compile_proto(proto, out_dir):
    """Generates PROTO's Python module into out_dir and imports it."""
    include, name = os.path.split(os.path.abspath(proto))
    status = protoc.main(["protoc", f"-I{include}", f"--python_out={out_dir}", name])
    if status != 0:
        sys.exit(f"protoc failed on {proto} ({status})")
    sys.path.insert(0, out_dir)
    return importlib.import_module(name[: -len(".proto")] + "_pb2")


def varint(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def row(message):
    out = {}
    for field, value in message.ListFields():
        if field.type == field.TYPE_BYTES:
            value = value.hex()
        elif field.type == field.TYPE_MESSAGE:
            sys.exit(f"unexpected message field {field.name}")
        out[field.name] = value
    return out


def rows_of(envelope):
    (rows_field,) = envelope.DESCRIPTOR.fields
    return [row(r) for r in getattr(envelope, rows_field.name)]


def read(module, fmt, path):
    envelope_type = module.Envelope
    with open(path, "rb") as f:
        data = f.read()
    rows = []
    if fmt == "protobufList":
        at = 0
        while at < len(data):
            length, at = varint(data, at)
            envelope = envelope_type()
            envelope.ParseFromString(data[at : at + length])
            at += length
            rows.extend(rows_of(envelope))
    elif fmt == "protoJson":
        text = data.decode("utf-8")
        if text and not text.endswith("\n"):
            sys.exit("protoJson output ends mid-line")
        for line in text.splitlines():
            rows.extend(rows_of(json_format.Parse(line, envelope_type())))
    elif fmt == "protoText":
        rows.extend(rows_of(text_format.Parse(data.decode("utf-8"), envelope_type())))
    else:
        sys.exit(f"unknown format {fmt}")
    return rows


def main():
    command, proto, *rest = sys.argv[1:]
    with tempfile.TemporaryDirectory() as out_dir:
        module = compile_proto(proto, out_dir)
        if command == "describe":
            described = descriptor_pb2.FileDescriptorProto()
            module.DESCRIPTOR.CopyToProto(described)
            print(json_format.MessageToJson(described))
        elif command == "read":
            result = {}
            for spec in rest:
                fmt, path = spec.split("=", 1)
                result[fmt] = read(module, fmt, path)
            json.dump(result, sys.stdout)
        else:
            sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
