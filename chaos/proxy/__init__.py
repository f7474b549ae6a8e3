"""A Toxiproxy-compatible TCP fault-injection proxy: the Toxiproxy 2.12 v2 HTTP API and
its network behaviour, on asyncio, so that the chaos suites run unchanged against this
server and against a real Toxiproxy. Run it with ``python -m chaos.proxy``; start it from
tests with ``chaos.proxy.testing``.

Layers, each importing only those above it:

    errors, gojson          error tree; Go ``encoding/json`` decoding and encoding
    address                 listen/upstream parsing, resolving and binding
    pipe, stage             chunks and channels; one toxic running on one link
    toxics                  the toxic types and their behaviours
    link, connection        one direction of a connection; a client with its upstream
    toxic_collection, proxy a proxy's toxics; a proxy's listener and connections
    bodies, registry        request bodies; every proxy by name
    api, server, cli        HTTP surface; composition root; command line
    testing, probes         starters and targets; bounded socket probes, for test suites
"""
