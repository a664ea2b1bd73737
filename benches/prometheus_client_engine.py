"""A stand-in for an inference engine's /metrics, served the way vLLM and
SGLang serve theirs: the real `prometheus_client` library's ASGI app under
uvicorn (with uvloop and httptools, as `uvicorn[standard]` installs them).

The registry holds the families of a payload file (for example what the
simulated engine serves), parsed once at start; every scrape renders them
again, in the classic text format or OpenMetrics as the client's Accept
header asks, and gzips the answer at the library's level (9) when the
client accepts gzip, exactly as the library does for an engine. Only the
families' origin differs from an engine's: a parsed payload instead of
live Counter/Histogram objects.

    python prometheus_client_engine.py PAYLOAD_FILE [PORT]

Prints "listening PORT" once it accepts connections.
"""

import socket
import sys

import uvicorn
from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families


class Payload:
    def __init__(self, text):
        self.families = list(text_string_to_metric_families(text))

    def collect(self):
        return iter(self.families)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Payload(text))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"listening {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(make_asgi_app(registry), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
