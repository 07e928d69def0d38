"""`matting serve`: the HTTP API and web page on a local Ray Serve (serve/local.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def command(args: argparse.Namespace) -> int:
    from serve import local

    return local.run(args.config, args.host, args.port, auth=not args.no_auth, address=args.address)


def register(sub) -> None:
    p = sub.add_parser("serve", help="start the HTTP API and web page locally (Ray Serve, serve/config.yaml)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--config", type=Path, help="Serve config file (default: serve/config.yaml, or "
                                               "serve/config.gpu.yaml where CUDA is usable)")
    p.add_argument("--no-auth", action="store_true",
                   help="no API keys: for your own machine only (logged loudly). Otherwise set MATTING_API_KEYS "
                        "or MATTING_API_KEYS_FILE")
    p.add_argument("--address", help="an existing Ray cluster to deploy on (default: a new local instance)")
    p.set_defaults(func=command)
