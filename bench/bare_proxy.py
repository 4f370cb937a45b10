"""The floor: the same stack as Lumen (uvicorn + uvloop + httptools, one pooled aiohttp
session, orjson) relaying to the upstream with none of Lumen's logic (no auth, no policy, no
billing, no usage rows, no SSE parsing). Measuring it with the same harness splits Lumen's
cost into "the stack" and "Lumen's own code".

It takes the arguments `lumen serve` takes, so run.py can start it in Lumen's place:

    python bench/run.py --lumen "python bench/bare_proxy.py"
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import orjson
import yaml

Scope = dict[str, Any]


class BareProxy:
    def __init__(self, routes: dict[str, tuple[str, str]]) -> None:
        self.routes = routes  # model name -> (base URL, upstream model)
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/healthz":
            await _respond(send, 200, b'"ok"', b"application/json")
            return
        body = bytearray()
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        req = orjson.loads(body)
        route = self.routes.get(req.get("model", ""))
        if route is None or self.session is None:
            await _respond(send, 404, b'{"error":{"message":"unknown model"}}', b"application/json")
            return
        base, upstream_model = route
        req["model"] = upstream_model
        async with self.session.post(
            base + "/chat/completions", data=orjson.dumps(req), headers={"Content-Type": "application/json"}
        ) as r:
            if not req.get("stream"):
                await _respond(send, r.status, await r.read(), b"application/json")
                return
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": r.status, "headers": headers})
            async for chunk in r.content.iter_any():  # bytes as they arrive, untouched
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


async def _respond(send: Any, status: int, body: bytes, ctype: bytes) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["serve"])
    ap.add_argument("--config", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--data-dir", default=None, help="accepted and ignored, like Lumen's")
    args = ap.parse_args(argv)
    with open(args.config) as f:
        config = yaml.safe_load(f)
    routes = {
        m["name"]: (m["endpoints"][0]["url"].rstrip("/"), m["endpoints"][0].get("upstream_model", m["name"]))
        for m in config.get("models", [])
    }
    import uvicorn

    uvicorn.run(
        BareProxy(routes),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
