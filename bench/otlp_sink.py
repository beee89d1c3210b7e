#!/usr/bin/env python3
"""An OTLP/HTTP receiver that answers 200 to every export and keeps nothing,
for the tracing-on runs of docs/benchmarks.md ("Tracing on and off"):

    bench/otlp_sink.py 4318 &     # then OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318

Prints the exports and bytes received when stopped (Ctrl-C / SIGTERM).
"""
import signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

received = {"exports": 0, "bytes": 0}

class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        received["exports"] += 1
        received["bytes"] += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

def stop(*_):
    print(f"otlp_sink: {received['exports']} exports, {received['bytes']} bytes", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
try:
    ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
except KeyboardInterrupt:
    stop()
