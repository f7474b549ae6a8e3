"""Part A: the HTTP API's status codes, messages and JSON shapes (mirrors ``api_test.go``)."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from chaos.proxy.probes import can_connect
from chaos.proxy.testing import Target, port_of

PLAIN = "text/plain; charset=utf-8"
PROXY_KEYS = ["name", "listen", "upstream", "enabled", "Logger", "toxics"]


def error_of(response: Any) -> dict[str, Any]:
    """Error bodies are JSON although their content type is text/plain."""
    assert response.headers["Content-Type"] == PLAIN
    assert response.text.endswith("\n")
    body: dict[str, Any] = json.loads(response.text)
    assert body["status"] == response.status_code
    return body


def test_version_body(http: Any, target: Target) -> None:
    response = http("GET", "/version")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json;charset=utf-8"
    assert isinstance(json.loads(response.content)["version"], str)
    if not target.is_real:
        assert response.content == b'{"version": "2.12.0"}\n'


def test_empty_proxy_list(http: Any) -> None:
    response = http("GET", "/proxies")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {}


def test_create_resolves_localhost_and_keeps_go_shape(http: Any, toxiproxy: Target) -> None:
    port = free_port()
    body = {"name": "one", "upstream": "127.0.0.1:1", "listen": f"localhost:{port}"}
    response = http("POST", "/proxies", json=body)
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    proxy = response.json()
    assert list(proxy) == PROXY_KEYS
    assert proxy["listen"] == f"127.0.0.1:{port}"
    assert (proxy["name"], proxy["upstream"], proxy["enabled"]) == ("one", "127.0.0.1:1", True)
    assert proxy["Logger"] == {} and proxy["toxics"] == []
    assert http("GET", "/proxies").json() == {"one": proxy}
    assert http("GET", "/proxies/one").json() == proxy


def test_create_on_port_zero_reports_the_bound_port(http: Any, toxiproxy: Target) -> None:
    body = {"name": "zero", "upstream": "127.0.0.1:1", "listen": toxiproxy.listen(0)}
    proxy = http("POST", "/proxies", json=body).json()
    assert port_of(proxy["listen"]) != 0
    assert can_connect(toxiproxy.proxy_host, port_of(proxy["listen"]))


def test_create_disabled_echoes_listen_and_refuses(http: Any, toxiproxy: Target) -> None:
    port = free_port()
    body = {"name": "off", "upstream": "127.0.0.1:1", "listen": f"localhost:{port}"}
    response = http("POST", "/proxies", json={**body, "enabled": False})
    assert response.status_code == 201
    assert response.json()["listen"] == f"localhost:{port}"
    assert response.json()["enabled"] is False
    assert not can_connect(toxiproxy.proxy_host, port)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"upstream": "127.0.0.1:1"}, "missing required field: name"),
        ({"name": "", "upstream": "127.0.0.1:1"}, "missing required field: name"),
        ({"name": "x"}, "missing required field: upstream"),
    ],
)
def test_create_requires_name_and_upstream(http: Any, body: Any, message: str) -> None:
    response = http("POST", "/proxies", json=body)
    assert response.status_code == 400
    assert error_of(response) == {"error": message, "status": 400}


def test_create_with_empty_body_is_eof(http: Any) -> None:
    response = http("POST", "/proxies", data=b"")
    assert response.status_code == 400
    assert error_of(response)["error"] == "bad request body: EOF"


def test_keys_match_case_insensitively(http: Any, toxiproxy: Target) -> None:
    body = {"NAME": "cased", "Upstream": "127.0.0.1:1", "LISTEN": toxiproxy.listen()}
    response = http("POST", "/proxies", json=body)
    assert response.status_code == 201
    assert response.json()["name"] == "cased"


def test_duplicate_proxy_is_409(http: Any, toxiproxy: Target) -> None:
    body = {"name": "dup", "upstream": "127.0.0.1:1", "listen": toxiproxy.listen()}
    assert http("POST", "/proxies", json=body).status_code == 201
    response = http("POST", "/proxies", json=body)
    assert response.status_code == 409
    assert error_of(response) == {"error": "proxy already exists", "status": 409}


def test_port_conflict_is_500_and_the_name_is_reusable(http: Any, toxiproxy: Target) -> None:
    first = http(
        "POST", "/proxies", json={"name": "a", "upstream": "127.0.0.1:1", "listen": "127.0.0.1:0"}
    ).json()
    clash = {"name": "b", "upstream": "127.0.0.1:1", "listen": first["listen"]}
    response = http("POST", "/proxies", json=clash)
    assert response.status_code == 500
    assert "bind: address already in use" in error_of(response)["error"]
    assert "b" not in http("GET", "/proxies").json()
    assert http("DELETE", "/proxies/a").status_code == 204
    assert http("POST", "/proxies", json=clash).status_code == 201


def test_delete_is_204_then_404(http: Any, toxiproxy: Target) -> None:
    body = {"name": "gone", "upstream": "127.0.0.1:1", "listen": toxiproxy.listen()}
    listen = http("POST", "/proxies", json=body).json()["listen"]
    response = http("DELETE", "/proxies/gone")
    assert (response.status_code, response.content) == (204, b"")
    assert not can_connect(toxiproxy.proxy_host, port_of(listen))
    for method in ("GET", "DELETE"):
        response = http(method, "/proxies/gone")
        assert response.status_code == 404
        assert error_of(response) == {"error": "proxy not found", "status": 404}
    response = http("GET", "/proxies/gone/toxics")
    assert error_of(response)["error"] == "proxy not found"


@pytest.fixture
def proxy(http: Any, toxiproxy: Target) -> str:
    body = {"name": "px", "upstream": "127.0.0.1:1", "listen": toxiproxy.listen()}
    assert http("POST", "/proxies", json=body).status_code == 201
    return "/proxies/px"


def test_toxic_defaults(http: Any, proxy: str) -> None:
    response = http("POST", f"{proxy}/toxics", json={"type": "latency"})
    assert response.status_code == 200
    assert response.json() == {
        "attributes": {"latency": 0, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    assert list(response.json()) == ["attributes", "name", "type", "stream", "toxicity"]


@pytest.mark.parametrize(
    ("toxic_type", "attributes"),
    [
        ("noop", {}),
        ("latency", {"latency": 0, "jitter": 0}),
        ("bandwidth", {"rate": 0}),
        ("slow_close", {"delay": 0}),
        ("timeout", {"timeout": 0}),
        ("reset_peer", {"timeout": 0}),
        ("slicer", {"average_size": 0, "size_variation": 0, "delay": 0}),
        ("limit_data", {"bytes": 0}),
    ],
)
def test_every_type_lists_all_its_attributes(
    http: Any, proxy: str, toxic_type: str, attributes: dict[str, int]
) -> None:
    # Upstream, so that a zero-valued toxic never touches a client's replies here.
    body = {"type": toxic_type, "stream": "upstream"}
    assert http("POST", f"{proxy}/toxics", json=body).json()["attributes"] == attributes


@pytest.mark.parametrize("stream", ["", "walrustream"])
def test_invalid_stream_is_400(http: Any, proxy: str, stream: str) -> None:
    response = http("POST", f"{proxy}/toxics", json={"type": "noop", "stream": stream})
    assert response.status_code == 400
    assert error_of(response)["error"] == (
        "stream was invalid, can be either upstream or downstream"
    )


def test_stream_is_parsed_case_insensitively_and_echoed(http: Any, proxy: str) -> None:
    response = http("POST", f"{proxy}/toxics", json={"type": "noop", "stream": "UPSTREAM"})
    assert response.status_code == 200
    assert (response.json()["stream"], response.json()["name"]) == ("UPSTREAM", "noop_UPSTREAM")


def test_unknown_type_is_400(http: Any, proxy: str) -> None:
    response = http("POST", f"{proxy}/toxics", json={"type": "walrus"})
    assert response.status_code == 400
    assert error_of(response)["error"] == "invalid toxic type"


def test_toxic_names(http: Any, proxy: str) -> None:
    def add(body: dict[str, Any]) -> Any:
        return http("POST", f"{proxy}/toxics", json=body)

    assert add({"type": "latency", "stream": "upstream"}).status_code == 200
    assert add({"type": "latency", "stream": "downstream"}).status_code == 200
    assert add({"type": "noop", "name": "n1"}).status_code == 200
    assert add({"type": "noop", "name": "n2"}).status_code == 200
    # Names are unique across both streams.
    response = add({"type": "noop", "name": "latency_upstream", "stream": "downstream"})
    assert response.status_code == 409
    assert error_of(response) == {"error": "toxic already exists", "status": 409}
    names = [toxic["name"] for toxic in http("GET", f"{proxy}/toxics").json()]
    assert names == ["latency_upstream", "latency_downstream", "n1", "n2"]


@pytest.mark.parametrize(
    ("attributes", "fragment"),
    [
        ({"latency": 100.0}, "cannot unmarshal number 100.0 into Go struct field"),
        ({"latency": "100"}, "cannot unmarshal string into Go struct field"),
        ({"latency": 1e3}, "cannot unmarshal number 1000.0 into Go struct field"),
    ],
)
def test_non_integer_attributes_are_400(
    http: Any, proxy: str, attributes: dict[str, Any], fragment: str
) -> None:
    response = http("POST", f"{proxy}/toxics", json={"type": "latency", "attributes": attributes})
    assert response.status_code == 400
    message = error_of(response)["error"]
    assert message.startswith("bad request body: json: ")
    assert fragment in message
    assert http("GET", f"{proxy}/toxics").json() == []


def test_duplicate_name_is_checked_before_attributes(http: Any, proxy: str) -> None:
    assert http("POST", f"{proxy}/toxics", json={"type": "latency"}).status_code == 200
    body = {"type": "latency", "attributes": {"latency": 1.5}}
    assert http("POST", f"{proxy}/toxics", json=body).status_code == 409


def test_patch_merges_attributes_and_keeps_toxicity(http: Any, proxy: str) -> None:
    body = {"type": "latency", "toxicity": 0.5, "attributes": {"latency": 100, "jitter": 10}}
    assert http("POST", f"{proxy}/toxics", json=body).json()["toxicity"] == 0.5
    path = f"{proxy}/toxics/latency_downstream"
    response = http("PATCH", path, json={"attributes": {"jitter": 20}})
    assert response.status_code == 200
    assert response.json()["attributes"] == {"latency": 100, "jitter": 20}
    assert response.json()["toxicity"] == 0.5
    # POST is the same update (the Go client's form); only the keys sent change.
    response = http("POST", path, json={"toxicity": 1})
    assert response.json()["toxicity"] == 1
    assert response.json()["attributes"] == {"latency": 100, "jitter": 20}
    assert http("GET", path).json() == response.json()


def test_toxic_delete_is_204_then_404(http: Any, proxy: str) -> None:
    assert http("POST", f"{proxy}/toxics", json={"type": "noop"}).status_code == 200
    response = http("DELETE", f"{proxy}/toxics/noop_downstream")
    assert (response.status_code, response.content) == (204, b"")
    for method in ("GET", "DELETE", "PATCH"):
        response = http(method, f"{proxy}/toxics/noop_downstream", json={})
        assert response.status_code == 404
        assert error_of(response) == {"error": "toxic not found", "status": 404}


def test_reset_enables_proxies_and_clears_toxics(http: Any, proxy: str) -> None:
    assert http("POST", f"{proxy}/toxics", json={"type": "latency"}).status_code == 200
    assert http("POST", proxy, json={"enabled": False}).json()["enabled"] is False
    response = http("POST", "/reset")  # no body and no content type, as toxiproxy-python
    assert (response.status_code, response.content) == (204, b"")
    state = http("GET", proxy).json()
    assert state["enabled"] is True
    assert state["toxics"] == []


def test_populate_creates_in_order(http: Any, toxiproxy: Target) -> None:
    items = [
        {"name": "p1", "upstream": "127.0.0.1:1", "listen": toxiproxy.listen()},
        {"name": "p2", "upstream": "127.0.0.1:2", "listen": toxiproxy.listen(), "enabled": False},
    ]
    response = http("POST", "/populate", json=items)
    assert response.status_code == 201
    created = response.json()["proxies"]
    assert [(p["name"], p["enabled"]) for p in created] == [("p1", True), ("p2", False)]
    assert sorted(http("GET", "/proxies").json()) == ["p1", "p2"]


def test_populate_with_nothing_answers_null(http: Any) -> None:
    response = http("POST", "/populate", json=[])
    assert response.status_code == 201
    assert response.json() == {"proxies": None}


def test_populate_validates_every_item_first(http: Any, toxiproxy: Target) -> None:
    items = [
        {"name": "ok", "upstream": "127.0.0.1:1", "listen": toxiproxy.listen()},
        {"upstream": "127.0.0.1:1", "listen": toxiproxy.listen()},
    ]
    response = http("POST", "/populate", json=items)
    assert response.status_code == 400
    assert error_of(response)["error"] == "missing required field: name at proxy 2"
    assert http("GET", "/proxies").json() == {}


def test_populate_keeps_items_before_a_failure(http: Any, toxiproxy: Target) -> None:
    items = [
        {"name": "first", "upstream": "127.0.0.1:1", "listen": toxiproxy.listen()},
        {"name": "second", "upstream": "127.0.0.1:1", "listen": "local373"},
    ]
    response = http("POST", "/populate", json=items)
    assert response.status_code == 500
    body = response.json()
    assert "missing port in address" in body["error"]
    assert [proxy["name"] for proxy in body["proxies"]] == ["first"]
    assert list(http("GET", "/proxies").json()) == ["first"]


def test_populate_keeps_a_matching_proxy_untouched(
    http: Any, toxiproxy: Target, sockets: Any, upstream: Any
) -> None:
    item = {"name": "keep", "upstream": toxiproxy.upstream(upstream.port), "listen": ""}
    item["listen"] = toxiproxy.listen(free_port())
    http("POST", "/populate", json=[item])
    assert http("POST", "/proxies/keep/toxics", json={"type": "noop"}).status_code == 200
    client = sockets.connect(toxiproxy.proxy_host, port_of(item["listen"]))
    server = upstream.accept()
    response = http("POST", "/populate", json=[item])
    assert response.status_code == 201
    assert [t["name"] for t in response.json()["proxies"][0]["toxics"]] == ["noop_downstream"]
    client.sendall(b"still here")
    assert server.recv(64) == b"still here"


def test_browser_user_agents_are_refused(http: Any) -> None:
    response = http("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert response.status_code == 403
    assert response.text.strip() == "User agent not allowed"


def test_unknown_path_is_404_and_wrong_method_405(http: Any) -> None:
    response = http("GET", "/walrus")
    assert (response.status_code, response.text) == (404, "404 page not found\n")
    for method, path in (("PUT", "/proxies"), ("DELETE", "/version"), ("GET", "/reset")):
        response = http(method, path)
        assert (response.status_code, response.content) == (405, b"")


def test_every_matched_response_has_a_request_id(http: Any) -> None:
    assert http("GET", "/proxies").headers["X-Toxiproxy-Request-Id"]
    assert http("GET", "/proxies/nothing").headers["X-Toxiproxy-Request-Id"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
