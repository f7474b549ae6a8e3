"""``python -m chaos.proxy --host 127.0.0.1 --port 8474 [--config proxies.json]``."""

from chaos.proxy.cli import main

raise SystemExit(main())
