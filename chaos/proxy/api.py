"""The Toxiproxy v2 HTTP API on aiohttp: routes, handlers, and the middleware that gives
every response the real server's framing.

- An unknown path is ``404`` ``404 page not found``; a known path with another method is
  ``405`` with an empty body (gorilla/mux). Neither passes through the rest.
- On matched routes: a ``Mozilla/`` user agent gets ``403``; every response carries
  ``X-Toxiproxy-Request-Id``; an ``ApiError`` becomes Go's ``http.Error`` body
  ``{"error":..,"status":..}\\n`` with ``text/plain; charset=utf-8``.
- Success bodies are compact JSON with ``application/json``.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from chaos.proxy import gojson
from chaos.proxy.bodies import (
    ProxyInput,
    decode_populate,
    decode_proxy,
    decode_proxy_update,
    decode_toxic,
    decode_toxic_update,
)
from chaos.proxy.errors import ApiError, PopulateFailed
from chaos.proxy.proxy import Proxy
from chaos.proxy.registry import ProxyRegistry

REGISTRY_KEY = web.AppKey("registry", ProxyRegistry)
VERSION = "2.12.0"
BROWSER_AGENT_PREFIX = "Mozilla/"

_PLAIN = "text/plain; charset=utf-8"


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/version", version, allow_head=False)
    router.add_get("/proxies", list_proxies, allow_head=False)
    router.add_post("/proxies", create_proxy)
    router.add_post("/populate", populate)
    router.add_post("/reset", reset)
    router.add_get("/proxies/{proxy}", get_proxy, allow_head=False)
    router.add_post("/proxies/{proxy}", update_proxy)
    router.add_patch("/proxies/{proxy}", update_proxy)
    router.add_delete("/proxies/{proxy}", delete_proxy)
    router.add_get("/proxies/{proxy}/toxics", list_toxics, allow_head=False)
    router.add_post("/proxies/{proxy}/toxics", create_toxic)
    router.add_get("/proxies/{proxy}/toxics/{toxic}", get_toxic, allow_head=False)
    router.add_post("/proxies/{proxy}/toxics/{toxic}", update_toxic)
    router.add_patch("/proxies/{proxy}/toxics/{toxic}", update_toxic)
    router.add_delete("/proxies/{proxy}/toxics/{toxic}", delete_toxic)


@web.middleware
async def toxiproxy_framing(request: web.Request, handler: Handler) -> web.StreamResponse:
    unmatched = request.match_info.http_exception
    if unmatched is not None:
        if unmatched.status == 405:
            return web.Response(status=405)
        return web.Response(status=404, body=b"404 page not found\n", headers=_plain_headers())
    response: web.StreamResponse
    if request.headers.get("User-Agent", "").startswith(BROWSER_AGENT_PREFIX):
        response = web.Response(
            status=403, body=b"User agent not allowed\n", headers=_plain_headers()
        )
    else:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _error(exc.status, {"error": exc.message, "status": exc.status})
        except PopulateFailed as exc:
            status = exc.cause.status
            body = {"error": exc.cause.message, "status": status, "proxies": exc.proxies}
            response = _error(status, body)
    response.headers["X-Toxiproxy-Request-Id"] = secrets.token_hex(10)
    return response


def _plain_headers() -> dict[str, str]:
    return {"Content-Type": _PLAIN, "X-Content-Type-Options": "nosniff"}


def _error(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=gojson.encode(body) + b"\n", headers=_plain_headers())


def _json(status: int, value: Any) -> web.Response:
    return web.Response(
        status=status, body=gojson.encode(value), headers={"Content-Type": "application/json"}
    )


def _registry(request: web.Request) -> ProxyRegistry:
    return request.app[REGISTRY_KEY]


def _proxy(request: web.Request) -> Proxy:
    return _registry(request).get(request.match_info["proxy"])


async def version(request: web.Request) -> web.Response:
    # The space after the colon and the trailing newline are the real server's bytes.
    return web.Response(
        body=f'{{"version": "{VERSION}"}}\n'.encode(),
        headers={"Content-Type": "application/json;charset=utf-8"},
    )


async def list_proxies(request: web.Request) -> web.Response:
    return _json(200, {proxy.name: proxy.to_json() for proxy in _registry(request).all()})


async def create_proxy(request: web.Request) -> web.Response:
    item = decode_proxy(await request.read())
    proxy = await _registry(request).create(item)
    return _json(201, proxy.to_json())


async def populate(request: web.Request) -> web.Response:
    items = decode_populate(await request.read())
    proxies = await _registry(request).populate(items)
    # An empty input answers {"proxies": null}, Go's nil slice.
    return _json(201, {"proxies": [proxy.to_json() for proxy in proxies] or None})


async def reset(request: web.Request) -> web.Response:
    await _registry(request).reset()
    return web.Response(status=204)


async def get_proxy(request: web.Request) -> web.Response:
    return _json(200, _proxy(request).to_json())


async def update_proxy(request: web.Request) -> web.Response:
    proxy = _proxy(request)
    raw = await request.read()
    async with proxy.lock:
        proxy.check_not_deleted()
        current = ProxyInput(proxy.name, proxy.listen, proxy.upstream, proxy.is_enabled)
        item = decode_proxy_update(raw, current)
        await proxy.update(item.listen, item.upstream, is_enabled=item.is_enabled)
        return _json(200, proxy.to_json())


async def delete_proxy(request: web.Request) -> web.Response:
    await _registry(request).delete(request.match_info["proxy"])
    return web.Response(status=204)


async def list_toxics(request: web.Request) -> web.Response:
    return _json(200, [toxic.to_json() for toxic in _proxy(request).toxics.all()])


async def create_toxic(request: web.Request) -> web.Response:
    proxy = _proxy(request)
    raw = await request.read()
    async with proxy.lock:
        proxy.check_not_deleted()
        draft = decode_toxic(raw)
        proxy.toxics.check_name_is_free(draft.name)
        toxic = draft.build()
        await proxy.toxics.add(toxic)
    return _json(200, toxic.to_json())


async def get_toxic(request: web.Request) -> web.Response:
    return _json(200, _proxy(request).toxics.get(request.match_info["toxic"]).to_json())


async def update_toxic(request: web.Request) -> web.Response:
    proxy = _proxy(request)
    raw = await request.read()
    async with proxy.lock:
        proxy.check_not_deleted()
        toxic = decode_toxic_update(raw, proxy.toxics.get(request.match_info["toxic"]))
        await proxy.toxics.update(toxic)
    return _json(200, toxic.to_json())


async def delete_toxic(request: web.Request) -> web.Response:
    proxy = _proxy(request)
    async with proxy.lock:
        proxy.check_not_deleted()
        await proxy.toxics.remove(request.match_info["toxic"])
    return web.Response(status=204)
