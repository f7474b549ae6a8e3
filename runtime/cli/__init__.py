"""The ``runtime`` command, each command a thin shell over the layers below.

``main.py`` is the entry point (parse, settings, dispatch, error -> exit status);
``parser.py`` builds every command's arguments (their value types in ``argtypes.py``);
``exits.py`` holds the exit statuses and ``table.py`` the one table printer. A module a
group of commands: ``serve.py``, ``functions.py`` (check, functions, invoke), ``admin.py``
(stats, peek, purge-dlq, requeue-dlq; printing in ``admin_text.py``), ``deploy.py``
(deploy, deployments, rollback; printing in ``deploy_text.py``) and ``tools.py``
(enqueue-dir and bench: ``enqueue_dir.py``, ``bench.py``, ``pacing.py``).

Layer 9, the top. May import every other layer; nothing imports it.
"""
