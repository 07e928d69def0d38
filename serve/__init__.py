"""The Ray Serve app: our HTTP API, a remove.bg-compatible API and the web page (serve/app.py)."""
