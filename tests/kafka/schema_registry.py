"""A stand-in for a Confluent-compatible schema registry: the one endpoint
xtcp2 calls, POST /subjects/{subject}/versions, as the Confluent REST API
defines it (body {"schema": TEXT, "schemaType": "PROTOBUF"|"AVRO"|"JSON"},
answer {"id": N}; 422 with error_code 42201 for an invalid schema body,
415 for a content type other than JSON). Every request is recorded.

    schema_registry.py RECORD_FILE
        listens on 127.0.0.1 (a free port), prints the port on stdout, and
        appends each request as one JSON line {method, path, content_type,
        subject, body} to RECORD_FILE; runs until killed.

Used by tests/kafka.rs.
"""

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

RECORD = sys.argv[1]
SCHEMAS = {}  # schema text -> id, as the registry keeps them
VERSIONS = re.compile(r"^/subjects/([^/]+)/versions$")


class Registry(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        content_type = self.headers.get("Content-Type", "")
        match = VERSIONS.match(self.path)
        entry = {
            "method": "POST",
            "path": self.path,
            "content_type": content_type,
            "subject": match.group(1) if match else None,
            "body": raw.decode("utf-8", "replace"),
        }
        with open(RECORD, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if not match:
            return self.answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
        if "json" not in content_type:
            return self.answer(415, {"error_code": 415, "message": "Unsupported Media Type"})
        try:
            body = json.loads(raw)
            schema = body["schema"]
            kind = body.get("schemaType", "AVRO")
        except (ValueError, KeyError, TypeError):
            return self.answer(422, {"error_code": 42201, "message": "Invalid schema"})
        if kind not in ("AVRO", "PROTOBUF", "JSON") or not isinstance(schema, str) or not schema:
            return self.answer(422, {"error_code": 42201, "message": "Invalid schema"})
        schema_id = SCHEMAS.setdefault(schema, len(SCHEMAS) + 1)
        self.answer(200, {"id": schema_id})

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Registry)
print(server.server_address[1], flush=True)
server.serve_forever()
