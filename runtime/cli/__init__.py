"""The ``runtime`` command: argument parsing and one module a group of commands
(serve and config, deploy, admin, tools), each a thin shell over the layers below.

Layer 9, the top. May import every other layer; nothing imports it.
"""
