"""Chaos tooling: a Toxiproxy-compatible fault-injection proxy (``chaos.proxy``) and a small
HTTP helper for its API (``chaos.toxiproxy_http``), used by the chaos test suites."""
