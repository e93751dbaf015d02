#!/usr/bin/env python3
"""Soak test of the Pulse gateway (driven by benches/soak.sh, which builds the binary).

Runs `full_stack etl` and `full_stack backend` as separate processes, keeps a steady
load of authenticated GETs on the gateway's /api/etl/* routes, SIGKILLs the ETL
service every --kill-every seconds and restarts it after --down seconds, and prints
every --interval seconds the gateway's RSS, open file descriptors, runtime tasks and
open connections (from its metrics listener) and the 2xx/503/504/other answers of
the interval. At the end: a summary and a verdict on the goals (RSS and fds flat
after warm-up, no answer other than 2xx/503/504, the breaker closed again after every
ETL restart). Exit status 0 when every goal holds, 1 otherwise.

Standard library only: the load comes from plain threads with keep-alive connections.
"""

import argparse
import collections
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# What the load asks for: the cached status the dashboard polls, and the job list
# (always proxied to the ETL).
PATHS = [("/api/etl/jobs/status", 0.7), ("/api/etl/jobs", 0.3)]
CATEGORIES = ("2xx", "503", "504", "other", "error")


def parse_duration(text):
    """`600`, `90s`, `10m`, `1h` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 10m)")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=5.0, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_healthy(port, what, process, deadline=60.0):
    """Wait until `GET /health` answers (any status: the service is up)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} while starting")
        try:
            http_get(port, "/health", timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not come up on :{port} in {deadline:.0f} s")


def login(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = json.dumps({"email": "admin@pulse.local", "password": "admin"})
        conn.request("POST", "/api/auth/login", body=body,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"login failed: {response.status} {data[:200]!r}")
        return json.loads(data)["access_token"]
    finally:
        conn.close()


def category(status):
    if 200 <= status < 300:
        return "2xx"
    if status in (503, 504):
        return str(status)
    return "other"


class Counts:
    """Answers per category, for the current interval and in total."""

    def __init__(self):
        self.lock = threading.Lock()
        self.interval = collections.Counter()
        self.total = collections.Counter()
        self.other_statuses = collections.Counter()
        self.errors = collections.Counter()
        self.last_2xx = 0.0
        self.reconnects = 0

    def add(self, what, detail=None):
        with self.lock:
            if what == "2xx":
                self.last_2xx = time.monotonic()
            self.interval[what] += 1
            self.total[what] += 1
            if what == "other":
                self.other_statuses[detail] += 1
            elif what == "error":
                self.errors[detail] += 1

    def take_interval(self):
        with self.lock:
            taken, self.interval = self.interval, collections.Counter()
            return taken


class Load(threading.Thread):
    """One client: a keep-alive connection, GETs back to back."""

    def __init__(self, port, token, counts, stop, timeout):
        super().__init__(daemon=True)
        self.port, self.token, self.counts, self.stop = port, token, counts, stop
        self.timeout = timeout
        self.rng = random.Random()

    def run(self):
        conn = None
        paths, weights = zip(*PATHS)
        retry = None
        while not self.stop.is_set():
            path = retry or self.rng.choices(paths, weights)[0]
            retry = None
            fresh = conn is None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                conn.request("GET", path, headers={"Authorization": f"Bearer {self.token[0]}"})
                response = conn.getresponse()
                response.read()
                self.counts.add(category(response.status), response.status)
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as error:
                if conn is not None:
                    conn.close()
                conn = None
                # A kept-alive connection the server closed between two requests (its
                # idle timeout): send the request again on a new one, as HTTP clients
                # do. On a new connection, any failure counts.
                if not fresh and isinstance(error, (http.client.RemoteDisconnected,
                                                    ConnectionResetError, BrokenPipeError)):
                    retry = path
                    with self.counts.lock:
                        self.counts.reconnects += 1
                    continue
                self.counts.add("error", type(error).__name__)
                time.sleep(0.05)
        if conn is not None:
            conn.close()


def read_metrics(port):
    """The gateway's Prometheus text as {series: value} (series with labels)."""
    try:
        status, body = http_get(port, "/metrics", timeout=5)
    except OSError:
        return {}
    if status != 200:
        return {}
    values = {}
    for line in body.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            values[name] = float(value)
        except ValueError:
            pass
    return values


def proc_sample(pid):
    """RSS in KiB, open fds and OS threads of `pid`."""
    rss_kib, threads = 0, 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kib, fds, threads


class Chaos(threading.Thread):
    """SIGKILL the ETL every `every` s, restart it after `down` s, and check that the
    gateway's breaker opened and closed again (with a 2xx answer) before the next kill."""

    def __init__(self, start_etl, metrics_port, counts, stop, every, down):
        super().__init__(daemon=True)
        self.start_etl, self.metrics_port, self.counts = start_etl, metrics_port, counts
        self.stop, self.every, self.down = stop, every, down
        self.etl = start_etl()
        self.cycles = []  # (opened?, closed again?, seconds from restart to closed)
        self.failure = None
        self.lock = threading.Lock()

    def breaker_state(self):
        return read_metrics(self.metrics_port).get('pulse_breaker_state{upstream="etl"}')

    def run(self):
        try:
            self.cycle_until_stopped()
        except BaseException as error:  # noqa: BLE001 - reported in the summary
            self.failure = f"ETL restarts stopped: {error}"

    def cycle_until_stopped(self):
        next_kill = time.monotonic() + self.every
        cycle = None  # [opened, restarted_at, closed_after]
        while True:
            # Up: until the next kill, watch the breaker close after the last restart.
            while time.monotonic() < next_kill:
                if self.stop.is_set():
                    if cycle is not None and cycle[2] is not None:
                        self.cycles.append((cycle[0], True, cycle[2]))
                    return
                if cycle is not None and cycle[2] is None:
                    state = self.breaker_state()
                    cycle[0] |= state == 1.0
                    if state == 0.0 and self.counts.last_2xx > cycle[1]:
                        cycle[2] = time.monotonic() - cycle[1]
                time.sleep(0.25)
            if cycle is not None:
                self.cycles.append((cycle[0], cycle[2] is not None, cycle[2]))
            # Down: SIGKILL, and watch the circuit open.
            with self.lock:
                self.etl.send_signal(signal.SIGKILL)
                self.etl.wait()
            opened = False
            while time.monotonic() < next_kill + self.down:
                if self.stop.is_set():
                    return
                opened |= self.breaker_state() == 1.0
                time.sleep(0.25)
            with self.lock:
                self.etl = self.start_etl()
            cycle = [opened, time.monotonic(), None]
            next_kill += self.every

    def terminate(self):
        with self.lock:
            stop_process(self.etl)


def stop_process(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def mib(kib):
    return kib / 1024.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True, help="the full_stack binary (release)")
    parser.add_argument("--duration", type=parse_duration, default=600.0,
                        help="how long to run (600, 90s, 10m; default 10m)")
    parser.add_argument("--interval", type=parse_duration, default=30.0,
                        help="report every … (default 30s)")
    parser.add_argument("--kill-every", type=parse_duration, default=20.0,
                        help="SIGKILL the ETL service every … (default 20s)")
    parser.add_argument("--down", type=parse_duration, default=5.0,
                        help="how long the ETL stays down each time (default 5s)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="client connections (default 16)")
    parser.add_argument("--warm-up", type=parse_duration, default=60.0,
                        help="ignored by the flatness verdicts (default 60s)")
    parser.add_argument("--breaker-open-ms", type=int, default=None,
                        help="the gateway's open period [default: the gateway's own]")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the data folder and the service logs")
    args = parser.parse_args()
    if not 0 < args.down < args.kill_every:
        parser.error("--down must be positive and shorter than --kill-every")

    data = tempfile.mkdtemp(prefix="pulse-soak-")
    etl_port, backend_port, metrics_port = free_port(), free_port(), free_port()
    common = ["--data-dir", data, "--log-format", "json"]
    # Warnings only, without the per-request ERROR line of every 5xx (the client counts
    # them); RUST_LOG overrides.
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn,tower_http=off"))
    etl_log = open(os.path.join(data, "etl.log"), "ab")
    backend_log = open(os.path.join(data, "backend.log"), "ab")

    def start_etl():
        process = subprocess.Popen(
            # The options come before the subcommand.
            [args.binary, "--etl-addr", f"127.0.0.1:{etl_port}", *common, "etl"],
            stdout=etl_log, stderr=subprocess.STDOUT, env=env)
        wait_healthy(etl_port, "the ETL service", process)
        return process

    stop = threading.Event()
    counts = Counts()
    chaos = None
    backend = None
    failed = []
    try:
        chaos = Chaos(start_etl, metrics_port, counts, stop, args.kill_every, args.down)
        backend = subprocess.Popen(
            [args.binary,
             "--backend-addr", f"127.0.0.1:{backend_port}",
             "--metrics-addr", f"127.0.0.1:{metrics_port}",
             "--etl-url", f"http://127.0.0.1:{etl_port}",
             *(["--breaker-open-ms", str(args.breaker_open_ms)] if args.breaker_open_ms else []),
             *common, "backend"],
            stdout=backend_log, stderr=subprocess.STDOUT, env=env)
        wait_healthy(backend_port, "the gateway", backend)
        token = [login(backend_port)]
        print(f"soak: gateway pid {backend.pid} on :{backend_port} (metrics :{metrics_port}), "
              f"ETL on :{etl_port}; {args.duration:.0f} s, {args.concurrency} clients, "
              f"ETL SIGKILLed every {args.kill_every:.0f} s and down {args.down:.0f} s; "
              f"data {data}", flush=True)
        print(f"{'time':>6} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'tasks':>6} {'conns':>6} "
              f"{'2xx':>8} {'503':>7} {'504':>6} {'other':>6} {'errors':>6} {'breaker':>8}",
              flush=True)
        loads = [Load(backend_port, token, counts, stop, timeout=40) for _ in range(args.concurrency)]
        for load in loads:
            load.start()
        chaos.start()

        started = time.monotonic()
        samples = []
        next_login = started + 1800
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= args.duration:
                break
            time.sleep(min(args.interval, args.duration - elapsed))
            if backend.poll() is not None:
                failed.append(f"the gateway exited with {backend.returncode}")
                break
            if time.monotonic() >= next_login:
                token[0] = login(backend_port)
                next_login += 1800
            elapsed = time.monotonic() - started
            rss, fds, threads = proc_sample(backend.pid)
            metrics = read_metrics(metrics_port)
            tasks = metrics.get("pulse_runtime_alive_tasks")
            conns = metrics.get('pulse_open_connections{listener="backend"}')
            state = {0.0: "closed", 1.0: "open", 2.0: "half"}.get(
                metrics.get('pulse_breaker_state{upstream="etl"}'), "?")
            c = counts.take_interval()
            samples.append((elapsed, rss, fds, tasks))
            fmt = lambda v: "-" if v is None else f"{v:.0f}"
            print(f"{elapsed:5.0f}s {mib(rss):8.1f} {fds:5d} {threads:7d} {fmt(tasks):>6} "
                  f"{fmt(conns):>6} {c['2xx']:8d} {c['503']:7d} {c['504']:6d} {c['other']:6d} "
                  f"{c['error']:6d} {state:>8}", flush=True)
    finally:
        stop.set()
        if chaos is not None:
            chaos.join(timeout=30)
            chaos.terminate()
        if backend is not None:
            stop_process(backend)
        etl_log.close()
        backend_log.close()

    summary(args, samples, counts, chaos, failed)
    if args.keep_data:
        print(f"data and logs kept in {data}")
    else:
        shutil.rmtree(data, ignore_errors=True)
    return 1 if failed else 0


def summary(args, samples, counts, chaos, failed):
    total = counts.total
    print()
    print("summary")
    answers = sum(total[k] for k in ("2xx", "503", "504", "other"))
    print(f"  answers: {answers}  2xx {total['2xx']}  503 {total['503']}  504 {total['504']}  "
          f"other {total['other']}  client errors {total['error']}")
    if counts.other_statuses:
        print(f"  other statuses: {dict(counts.other_statuses)}")
    if counts.errors:
        print(f"  client errors: {dict(counts.errors)}")
    if total["other"]:
        failed.append(f"{total['other']} answers other than 2xx/503/504")
    if total["error"]:
        failed.append(f"{total['error']} requests without an answer")

    warm = [s for s in samples if s[0] > args.warm_up] or samples[-2:]
    if len(warm) >= 2:
        rss = [s[1] for s in warm]
        fds = [s[2] for s in warm]
        tasks = [s[3] for s in warm if s[3] is not None]
        rss_growth = mib(rss[-1] - rss[0])
        print(f"  after warm-up ({args.warm_up:.0f} s, {len(warm)} samples): "
              f"RSS {mib(min(rss)):.1f}–{mib(max(rss)):.1f} MiB (first→last {rss_growth:+.1f} MiB), "
              f"fds {min(fds)}–{max(fds)}"
              + (f", tasks {min(tasks):.0f}–{max(tasks):.0f}" if tasks else ""))
        # Flat: the last sample within 10 % (at least 8 MiB) of the first, and the fds
        # within the client connections' churn.
        if rss_growth > max(8.0, 0.10 * mib(rss[0])):
            failed.append(f"RSS grew {rss_growth:+.1f} MiB after warm-up")
        if fds[-1] - fds[0] > args.concurrency + 8:
            failed.append(f"open fds grew from {fds[0]} to {fds[-1]} after warm-up")
    else:
        print("  too short for a flatness verdict (fewer than two samples after warm-up)")

    if counts.reconnects:
        print(f"  kept-alive connections closed by the gateway between requests "
              f"(retried on a new one): {counts.reconnects}")
    if chaos is not None:
        if chaos.failure:
            failed.append(chaos.failure)
        cycles = chaos.cycles
        closed = [c for c in cycles if c[1]]
        times = [c[2] for c in closed]
        print(f"  ETL kills: {len(cycles)}; circuit opened in {sum(1 for c in cycles if c[0])}, "
              f"closed again (and served) after the restart in {len(closed)}"
              + (f", {min(times):.1f}–{max(times):.1f} s after the restart" if times else ""))
        if len(closed) < len(cycles):
            failed.append(f"the breaker stayed open after {len(cycles) - len(closed)} restart(s)")

    print("  verdict: " + ("PASS" if not failed else "FAIL: " + "; ".join(failed)))


if __name__ == "__main__":
    sys.exit(main())
