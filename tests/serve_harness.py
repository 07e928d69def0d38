"""Helpers the serve test modules share."""

from __future__ import annotations

from pathlib import Path

from serve.local import running_app  # noqa: F401 (re-exported for the test modules)


def session_logs_dir() -> Path:
    """Where this Ray session writes every process's logs (Serve's access logs included)."""
    import ray

    return Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
