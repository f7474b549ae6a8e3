"""What a runtime is told: settings (dynaconf sources, validated once into a frozen
struct) and the registry of handler functions loaded from the configured folder.

Layer 2. May import: the handler contract and ``runtime.jobs``.
"""
