"""localstripe on 127.0.0.1 only, from scratch, for connect-ledger's end-to-end tests.

Usage: python3 localstripe_server.py PORT  — prints "listening on 127.0.0.1:PORT" when ready.

Test-only adaptation (the service stays right for Stripe): localstripe rejects the `reason`
parameter of POST /v1/refunds, which real Stripe accepts and connect-ledger always sends, so
this wrapper drops it before localstripe sees the request. localstripe also ignores
Stripe-Account and Idempotency-Key; the tests that need those use other fakes.
"""

import os
import socket
import sys
import urllib.parse

from aiohttp import web

PICKLE = "/tmp/localstripe.pickle"
if os.path.exists(PICKLE):
    os.remove(PICKLE)

import localstripe.server as server  # noqa: E402  (reads the pickle at import)


@web.middleware
async def drop_refund_reason(request, handler):
    if request.method == "POST" and request.path == "/v1/refunds":
        body = await request.read()
        pairs = [(k, v) for k, v in urllib.parse.parse_qsl(body.decode()) if k != "reason"]
        # aiohttp serves later reads (request.post()) from this cache.
        request._read_bytes = urllib.parse.urlencode(pairs).encode()
    return await handler(request)


server.app.middlewares.insert(0, drop_refund_reason)

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", port))
print(f"listening on 127.0.0.1:{sock.getsockname()[1]}", flush=True)
web.run_app(server.app, sock=sock, print=None)
