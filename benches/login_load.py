#!/usr/bin/env python3
"""Fire concurrent logins at a running gateway and watch its memory.

Usage: login_load.py --url http://127.0.0.1:PORT --pid PID [--concurrency 200]
                     [--timeout 30] [--rounds 3]

Each round opens `concurrency` connections, each from its own loopback address
(127.1.1.1, 127.1.1.2, ...: distinct clients, so the per-address throttle stays out of
the way and every request reaches the password check), waits until all are connected,
then sends one login on each at the same moment: a mix of right and wrong passwords for
the demo accounts and unknown ones. Meanwhile the gateway's VmRSS and VmHWM are sampled
from /proc/PID/status every 5 ms.

Prints the resident memory before, the peak increase, the answers by status, the
slowest answer, and whether every answer arrived within the timeout. Exits 1 if not.
Loopback only; standard library only.
"""

import argparse
import http.client
import json
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlparse


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


class Sampler(threading.Thread):
    """Samples VmRSS every 5 ms; `peak` is the largest seen (VmHWM is read too)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.running = True

    def run(self):
        while self.running:
            try:
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            except (OSError, RuntimeError):
                return
            time.sleep(0.005)


def credentials(i):
    # A quarter right (admin, viewer), the rest wrong passwords or unknown accounts.
    kind = i % 8
    if kind == 0:
        return "admin@pulse.local", "admin"
    if kind == 1:
        return "viewer@pulse.local", "viewer"
    if kind in (2, 3, 4):
        return "admin@pulse.local", f"wrong-{i}"
    return f"nobody-{i}@example.com", f"guess-{i}"


def source_address(round_no, concurrency, i):
    # Distinct per request and per round, all inside 127.0.0.0/8 (loopback on Linux).
    n = round_no * concurrency + i
    return (f"127.{1 + n // 62_500 % 250}.{1 + n // 250 % 250}.{1 + n % 250}", 0)


def one_login(host, port, timeout, round_no, concurrency, i, barrier, results):
    email, password = credentials(i)
    body = json.dumps({"email": email, "password": password})
    started = None
    try:
        conn = http.client.HTTPConnection(
            host, port, timeout=timeout, source_address=source_address(round_no, concurrency, i)
        )
        conn.connect()
        barrier.wait(timeout=timeout)
        started = time.monotonic()
        conn.request(
            "POST", "/api/auth/login", body, {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        response.read()
        results[i] = (response.status, time.monotonic() - started)
        conn.close()
    except Exception as error:  # a timeout, a reset: counted, not raised
        elapsed = time.monotonic() - started if started else 0.0
        results[i] = (f"error: {type(error).__name__}", elapsed)


def run_round(host, port, concurrency, timeout, round_no):
    barrier = threading.Barrier(concurrency)
    results = [None] * concurrency
    threads = [
        threading.Thread(
            target=one_login,
            args=(host, port, timeout, round_no, concurrency, i, barrier, results),
        )
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return [r if r is not None else ("error: no answer", timeout) for r in results]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the gateway, http://host:port")
    parser.add_argument("--pid", required=True, type=int, help="the gateway's process id")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = urlparse(args.url)
    host, port = url.hostname, url.port or 80

    rss_before = status_kib(args.pid, "VmRSS")
    hwm_before = status_kib(args.pid, "VmHWM")
    sampler = Sampler(args.pid)
    sampler.start()
    statuses = Counter()
    slowest = 0.0
    all_in_time = True
    for round_no in range(args.rounds):
        results = run_round(host, port, args.concurrency, args.timeout, round_no)
        round_statuses = Counter(status for status, _ in results)
        round_slowest = max(elapsed for _, elapsed in results)
        print(
            f"round {round_no + 1}: {dict(sorted(round_statuses.items(), key=str))}, "
            f"slowest {round_slowest * 1000:.0f} ms"
        )
        statuses.update(round_statuses)
        slowest = max(slowest, round_slowest)
        all_in_time &= all(
            isinstance(status, int) and elapsed <= args.timeout
            for status, elapsed in results
        )
    sampler.running = False
    sampler.join()
    hwm_after = status_kib(args.pid, "VmHWM")
    peak = max(sampler.peak, hwm_after)

    print()
    print(f"logins:                 {args.rounds} x {args.concurrency} concurrent")
    print(f"RSS before:             {rss_before / 1024:.1f} MiB (VmHWM {hwm_before / 1024:.1f} MiB)")
    print(f"VmHWM after:            {hwm_after / 1024:.1f} MiB (sampled VmRSS peak {sampler.peak / 1024:.1f} MiB)")
    # An upper bound: VmHWM also holds any peak from before the load (start-up hashing).
    print(f"peak RSS increase:      {(peak - rss_before) / 1024:.1f} MiB")
    print(f"answers by status:      {dict(sorted(statuses.items(), key=str))}")
    print(f"max latency:            {slowest * 1000:.0f} ms")
    print(f"all answered within {args.timeout:g} s: {'yes' if all_in_time else 'no'}")
    return 0 if all_in_time else 1


if __name__ == "__main__":
    sys.exit(main())
