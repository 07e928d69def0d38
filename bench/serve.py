"""Online serving under load: batching off and on, at 1, 4 and 8 concurrent clients (a benchmark, not a test).

    python bench/serve.py [--duration 20] [--clients 1 4 8] [--batch-size 8] [--wait 0.02] [--json PATH]

Method:
1. The app runs in-process as the tests run it (serve.local.running_app): a local Ray
   (address="local", num_cpus=os.cpu_count()), Serve on a free 127.0.0.1 port, auth on with a key
   made for the run, a rate limit far above what the clients can send. Model replica: one, with
   max_ongoing_requests=max(16, batch size), max_queued_requests=-1 (no 503s: queueing is measured).
2. Two modes on the same running Serve instance, switched through the model deployment's
   user_config (Serve's reconfigure, no restart): "batching off" = max_batch_size 1, wait 0;
   "batching on" = --batch-size and --wait.
3. For each mode: a warm-up of two bursts of 2 × max_batch_size concurrent requests (full
   batches, so ONNX Runtime's memory arena reaches its working size), then the RSS of this run's
   Serve processes (the replicas and the proxy: descendants of this process whose title starts
   with ray::ServeReplica or ray::ProxyActor). Then, for each client count, that many threads
   POST /v1/matte (raw JPEG body, the bundled photos in turn, default parameters: PNG out) back
   to back for --duration seconds, and the RSS again. A request counts when it completes inside
   the window; latency is the client's wall time per request. req/s = completed / duration;
   errors = non-200 answers and exceptions.
The clients run on the same machine as the server and share its cores, so absolute numbers are
lower than on a dedicated host; compare the two modes side by side, within one run.

Against the peer (--peer rembg), the issue-18 comparison, as a user would run both servers:
    python bench/serve.py --peer rembg [--duration 60] [--clients 8] [--serve-configs A.yaml B.yaml]
1. `rembg s --no-ui` (rembg[cpu,cli]==bench/peer.py's REMBG_VERSION in its own venv under --work,
   U2NET_HOME pointing at our cached U²-Netp file, as bench/peer.py sets them up), then
   `matting serve` with its default config (serve/config.yaml) and one API key per client, each a
   separate process on a free loopback port, one after the other (never both at once).
2. Each gets a warm-up of 2 × clients requests, then `--clients` threads POST the same 1024×768
   JPEG (bench/photos.py's photo 0) back to back for --duration seconds: rembg's
   `POST /api/remove` (multipart `file`, `model=u2netp`), ours `POST /v1/matte` (raw body, PNG out,
   each client with its own key). Successful requests/s, latency and errors per server, then the
   ratio ours/rembg.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/serve.py` from the repository root or anywhere

from serve.local import free_port, running_app  # noqa: E402
from serve.settings import AppArgs  # noqa: E402

KEY = "bench-" + os.urandom(8).hex()
PHOTOS = [p.read_bytes() for p in sorted((ROOT / "pipelines" / "samples").glob("*.jpg"))]


def serve_rss_mb() -> dict[str, float]:
    """RSS in MB of this process's Serve descendants, by process title."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - mine
        mine |= frontier
    out = {}
    for pid in mine:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if title.startswith(("ray::ServeReplica", "ray::ProxyActor")):
                rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if line.startswith("VmRSS:"))
                name = title.split()[0].removeprefix("ray::").split(".")[0]  # drop ".method" while busy
                out[name] = round(out.get(name, 0.0) + rss / 1024, 1)
        except (OSError, StopIteration):
            pass
    return dict(sorted(out.items()))


def warm_up(base: str, n: int) -> list[str]:
    """n concurrent requests, twice: full batches reach the model, so its memory arena reaches its
    working size. Returns what went wrong, if anything (warm-up answers are not counted)."""
    problems: list[str] = []

    def one(i: int) -> None:
        try:
            r = requests.post(f"{base}/v1/matte", data=PHOTOS[i % len(PHOTOS)], timeout=300,
                              headers={"X-Api-Key": KEY, "Content-Type": "image/jpeg"})
            if r.status_code != 200:
                problems.append(f"HTTP {r.status_code} {r.text[:120]}")
        except requests.RequestException as e:
            problems.append(type(e).__name__)

    for _ in range(2):
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return problems


def matte_request(base: str, keys: list[str]):
    """Our /v1/matte with a raw JPEG body: client i sends with keys[i % len(keys)]."""
    def post(session: requests.Session, i: int, n: int) -> requests.Response:
        return session.post(f"{base}/v1/matte", data=PHOTOS[n % len(PHOTOS)], timeout=120,
                            headers={"X-Api-Key": keys[i % len(keys)], "Content-Type": "image/jpeg"})
    return post


def load(post, clients: int, duration: float) -> dict:
    """`clients` threads call post(session, client, n) back to back for `duration` seconds."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client(i: int) -> None:
        s = requests.Session()
        n = i
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                return
            try:
                r = post(s, i, n)
                ok, why = r.status_code == 200, f"HTTP {r.status_code}"
            except requests.RequestException as e:
                ok, why = False, type(e).__name__
            t1 = time.monotonic()
            n += clients
            if t1 <= stop_at:
                with lock:
                    (latencies.append(t1 - t0) if ok else errors.append(why))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.asarray(latencies) * 1000.0
    pct = (lambda q: float(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
    return {"clients": clients, "requests": len(latencies), "rps": len(latencies) / duration,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "errors": len(errors),
            "error_kinds": sorted(set(errors))}


# -- against the peer ---------------------------------------------------------------------------

def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> float:
    """Seconds until GET url answers 200 (a server's start-up), or raise naming the log."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before it was ready")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return time.monotonic() - t0
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready within {timeout_s:.0f} s")


def _batch1(cfg: dict) -> None:
    model = next(d for d in cfg["applications"][0]["deployments"] if d["name"].startswith("Model_"))
    model["user_config"]["max_batch_size"] = 1


def _two_sessions(cfg: dict) -> None:
    """Two single-threaded model replicas at batch 1, fitted beside the ingress into 2 CPUs."""
    _batch1(cfg)
    app = cfg["applications"][0]
    app["args"]["threads"] = 1
    model = next(d for d in app["deployments"] if d["name"].startswith("Model_"))
    model["autoscaling_config"]["min_replicas"] = 2
    model["ray_actor_options"]["num_cpus"] = 0.7


# Layouts of serve/config.yaml tried against the peer (--serve-configs NAME): each a change to it.
VARIANTS = {"batch1": _batch1, "two-sessions": _two_sessions}


def variant_config(name: str, work: Path) -> Path:
    import yaml

    cfg = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    VARIANTS[name](cfg)
    path = work / "serve-configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@contextlib.contextmanager
def server(cmd: list[str], env: dict, ready_url: str, log: Path):
    """A server process (its own process group), ready; stopped with SIGINT, then SIGKILL."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield wait_ready(ready_url, proc, 300)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def one_server(name: str, post, clients: int, duration: float) -> dict:
    problems = []
    with requests.Session() as s:
        for n in range(2 * clients):  # warm-up: sessions made, arenas at size (not counted)
            try:
                r = post(s, n % clients, n)
                if r.status_code != 200:
                    problems.append(f"HTTP {r.status_code} {r.text[:120]}")
            except requests.RequestException as e:
                problems.append(type(e).__name__)
    if problems:
        print(f"{name}: warm-up problems {sorted(set(problems))}", flush=True)
    r = load(post, clients, duration)
    r["server"] = name
    print(f"{name:8s} clients={clients}  {r['rps']:6.2f} req/s  p50 {r['p50_ms']:7.0f} ms  p95 {r['p95_ms']:7.0f} ms  "
          f"errors {r['errors']} {r['error_kinds'] or ''}", flush=True)
    return r


def against_rembg(a) -> list[dict]:
    from peer import REMBG_VERSION, machine, rembg_venv, u2net_home  # bench/ is on the path as a script
    from photos import make_photo

    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rembg, home = rembg_venv(work, REMBG_VERSION), u2net_home(work)
    ok, jpeg = cv2.imencode(".jpg", make_photo(0), [cv2.IMWRITE_JPEG_QUALITY, 90])
    photo = jpeg.tobytes()
    info = machine()
    print(f"machine: {info}; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    print(f"command: {' '.join(sys.argv)}", flush=True)
    results = []

    port = free_port()
    env = {**os.environ, "U2NET_HOME": str(home)}
    def rembg_post(session, i, n):
        return session.post(f"http://127.0.0.1:{port}/api/remove", files={"file": ("photo.jpg", photo, "image/jpeg")},
                            data={"model": "u2netp"}, timeout=120)
    with server([str(rembg), "s", "--host", "127.0.0.1", "--port", str(port), "--no-ui", "--log_level", "warning"],
                env, f"http://127.0.0.1:{port}/api", work / "rembg-s.log") as ready_s:
        print(f"rembg s ready in {ready_s:.1f} s", flush=True)
        results.append(one_server("rembg", rembg_post, a.clients[0], a.duration) | {"ready_s": ready_s})

    port = free_port()
    keys = [f"bench-{i}-" + os.urandom(6).hex() for i in range(a.clients[0])]
    env = {**os.environ, "MATTING_API_KEYS": ",".join(keys)}
    matting = Path(sys.executable).parent / "matting"
    def our_post(session, i, n):
        return session.post(f"http://127.0.0.1:{port}/v1/matte", data=photo, timeout=120,
                            headers={"X-Api-Key": keys[i % len(keys)], "Content-Type": "image/jpeg"})
    configs = [variant_config(c, work) if c in VARIANTS else c for c in a.serve_configs or []]
    for config in configs or [None]:  # the default config, or each one named, in turn
        flags = ["--config", str(config)] if config else []
        with server([str(matting), "serve", "--port", str(port), *flags], env, f"http://127.0.0.1:{port}/healthz",
                    work / "matting-serve.log") as ready_s:
            label = f"ours ({Path(config).name})" if config else "ours"
            print(f"matting serve {' '.join(flags)} ready in {ready_s:.1f} s", flush=True)
            results.append(one_server(label, our_post, a.clients[0], a.duration) | {"ready_s": ready_s})

    theirs = results[0]
    print("\n| server | clients | successful req/s | p50 ms | p95 ms | errors | ready after | ÷ rembg |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in results:
        r["ratio"] = r["rps"] / theirs["rps"] if theirs["rps"] else float("nan")
        print(f"| {r['server']} | {r['clients']} | {r['rps']:.2f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
              f"{r['errors']} | {r['ready_s']:.1f} s | {r['ratio']:.2f}× |")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return results + [{"machine": info}]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per client count (default 20)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--wait", type=float, default=0.02, help="batch_wait_timeout_s when batching (default 0.02)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--peer", choices=["rembg"], help="compare `matting serve` with `rembg s` instead (first --clients "
                                                      "value only; see the module's docstring)")
    ap.add_argument("--work", default=str(ROOT / "bench" / ".work"), help="rembg's venv and the logs (git-ignored)")
    ap.add_argument("--serve-configs", nargs="+", metavar="YAML|VARIANT",
                    help="with --peer: run `matting serve --config YAML` for each, in turn (default: its own config); "
                         f"a name of {sorted(VARIANTS)} is serve/config.yaml with that change (written under --work)")
    a = ap.parse_args()
    if a.peer:
        results = against_rembg(a)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=2))
        return 0

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start (shared machines "
          "give noisy figures)", flush=True)
    # A long model wait: on a loaded machine a full batch can take tens of seconds, and the bench
    # measures that latency rather than turning it into 503s.
    args = AppArgs(rate_limit_per_minute=1e6, rate_limit_burst=10_000, cpu_threads=4, request_timeout_s=300)
    modes = [("batching off", {"max_batch_size": 1, "batch_wait_timeout_s": 0.0}),
             ("batching on", {"max_batch_size": a.batch_size, "batch_wait_timeout_s": a.wait})]

    def overrides(user_config: dict) -> dict:
        return {"Model_u2netp": {"user_config": user_config, "max_queued_requests": -1,
                                 "max_ongoing_requests": max(16, a.batch_size), "ray_actor_options": {"num_cpus": 1}},
                "MattingIngress": {"ray_actor_options": {"num_cpus": 0}}}

    results = []
    from ray import serve

    from serve.app import make_app

    with running_app(args, overrides(modes[0][1]), env={"MATTING_API_KEYS": KEY}, num_cpus=os.cpu_count()) as base:
        for name, user_config in modes:
            serve.run(make_app(args, overrides(user_config)), name="matting", route_prefix="/")
            got = requests.get(f"{base}/healthz", timeout=30).json()["models"]["u2netp"]
            assert got["max_batch_size"] == user_config["max_batch_size"], got
            problems = warm_up(base, 2 * user_config["max_batch_size"])
            if problems:
                print(f"{name:13s} warm-up: {len(problems)} failed request(s): {sorted(set(problems))}", flush=True)
            mem_start = serve_rss_mb()
            print(f"{name:13s} Serve RSS MB after warm-up   {json.dumps(mem_start)}", flush=True)
            for c in a.clients:
                r = load(matte_request(base, [KEY]), c, a.duration)
                r.update(mode=name, **user_config, rss_mb=serve_rss_mb())
                results.append(r)
                print(f"{name:13s} clients={c}  {r['rps']:6.2f} req/s  p50 {r['p50_ms']:7.0f} ms  p95 "
                      f"{r['p95_ms']:7.0f} ms  p99 {r['p99_ms']:7.0f} ms  "
                      f"errors {r['errors']} {r['error_kinds'] or ''}",
                      flush=True)
                print(f"{name:13s} Serve RSS MB after {c} client(s) {json.dumps(r['rss_mb'])}", flush=True)
            results.append({"mode": name, "rss_start_mb": mem_start, "rss_end_mb": results[-1]["rss_mb"]})

    print(f"\n| mode | clients | req/s | p50 ms | p95 ms | p99 ms | errors |\n|---|---|---|---|---|---|---|")
    for r in results:
        if "clients" in r:
            print(f"| {r['mode']} (batch {r['max_batch_size']}) | {r['clients']} | {r['rps']:.2f} | "
                  f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} |")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
