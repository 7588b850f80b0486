"""The explorer's web app (Starlette): the pages (one static single-page app, every asset vendored),
and the JSON endpoints of :mod:`explorer.api`.

Security: the store is opened as the read-only user (the server refuses writes, whatever the query
console sends); requests whose ``Host`` is not this server's are refused (a web page elsewhere cannot
reach a loopback app through DNS rebinding); when a token is set (``atlas serve --host`` anything but
loopback) every request must carry it (``?token=``, the ``X-Atlas-Token`` header or the cookie the
first tokened page load sets); a bad parameter is a 4xx with a one-line message, never a stack trace.
"""

from __future__ import annotations

import hmac
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from atlas.errors import AtlasError, ComponentNotFound, NoPath, QueryError, ReadOnlyViolation, RunNotFound, StoreUnavailable, ValidationError
from explorer.api import Explorer, clean, cookbook

__all__ = ["create_app", "STATIC"]

STATIC = Path(__file__).with_name("static")
_STATUS = [(RunNotFound, 404), (ComponentNotFound, 404), (NoPath, 404), (ReadOnlyViolation, 403), (StoreUnavailable, 503),
           (QueryError, 400), (ValidationError, 400), (AtlasError, 400)]
TOKEN_COOKIE = "atlas_token"


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(clean(data), status_code=status, headers={"Cache-Control": "no-store"})


def _error(message: str, status: int) -> JSONResponse:
    return _json({"error": " ".join(message.split())}, status)


def create_app(explorer: Explorer, *, token: str | None = None, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
               log: Callable[[str], None] | None = None) -> Starlette:
    """The app over ``explorer``'s store; ``hosts``: the names this server answers to (its Host header;
    ``*``: any, for a server that requires ``token``)."""
    say = log or (lambda msg: print(msg, file=sys.stderr))

    def endpoint(fn: Callable[[Request], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                data = await run_in_threadpool(fn, request)
            except AtlasError as exc:
                status = next(code for kind, code in _STATUS if isinstance(exc, kind))
                return _error(str(exc), status)
            except (ValueError, TypeError, KeyError) as exc:  # a parameter of the wrong shape
                return _error(f"bad parameter: {exc}", 400)
            except Exception as exc:  # noqa: BLE001 - the page gets one line; the terminal the type
                say(f"atlas serve: {request.url.path} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                return _error(f"internal error ({type(exc).__name__}); the server's terminal has the details", 500)
            response = _json(data)
            response.headers["Server-Timing"] = f"atlas;dur={1000 * (time.perf_counter() - t0):.1f}"
            return response

        return handle

    q = lambda r, name, default=None: r.query_params.get(name, default)  # noqa: E731

    def integer(r: Request, name: str, default: int) -> int:
        raw = r.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValidationError(f"{name} must be an integer, got {raw!r}") from None

    def number(r: Request, name: str, default: float | None) -> float | None:
        raw = r.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            return float(raw)
        except ValueError:
            raise ValidationError(f"{name} must be a number, got {raw!r}") from None

    async def query(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error("the body must be JSON: {\"cypher\": \"...\", \"params\": {...}}", 400)
        if not isinstance(body, dict):
            return _error("the body must be a JSON object", 400)
        return await endpoint(lambda r: explorer.query(body.get("cypher", ""), body.get("params")))(request)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", index),
        Route("/api/runs", endpoint(lambda r: explorer.runs())),
        Route("/api/meta", endpoint(lambda r: explorer.meta())),
        Route("/api/overview", endpoint(lambda r: explorer.overview(q(r, "run", ""), integer(r, "top", 300), integer(r, "blocks", 60)))),
        Route("/api/edges", endpoint(lambda r: explorer.edges(
            q(r, "run", ""), top=integer(r, "top", 100), layer=q(r, "layer"), kind=q(r, "kind"), channel=q(r, "channel"),
            min_abs=number(r, "min", None), max_abs=number(r, "max", None), component=q(r, "component")))),
        Route("/api/search", endpoint(lambda r: explorer.search(q(r, "run", ""), q(r, "q", ""), integer(r, "limit", 50)))),
        Route("/api/component", endpoint(lambda r: explorer.component(q(r, "run", ""), q(r, "id", ""), integer(r, "top", 15)))),
        Route("/api/paths", endpoint(lambda r: explorer.paths(
            q(r, "run", ""), source=q(r, "source"), target=q(r, "target"), through=r.query_params.getlist("through"),
            k=integer(r, "k", 10), min_weight=number(r, "min", 0.0) or 0.0,
            max_length=integer(r, "maxLength", 0) or None))),
        Route("/api/compare", endpoint(lambda r: explorer.compare(q(r, "a", ""), q(r, "b", ""), integer(r, "top", 50)))),
        Route("/api/cookbook", endpoint(lambda r: {"entries": cookbook()})),
        Route("/api/query", query, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    allowed = {h.lower() for h in hosts}

    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if "*" not in allowed and host not in allowed:
            return PlainTextResponse(f"this server answers to {', '.join(sorted(allowed))} only", status_code=421)
        given = request.query_params.get("token") or request.headers.get("x-atlas-token") or request.cookies.get(TOKEN_COOKIE)
        if token is not None and not (given and hmac.compare_digest(given, token)):
            if request.url.path.startswith("/api/"):
                return _error("this explorer needs its token: open the URL 'atlas serve' printed", 401)
            return PlainTextResponse("this explorer needs its token: open the URL 'atlas serve' printed", status_code=401)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                                                       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
        if token is not None and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])
