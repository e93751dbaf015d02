#!/usr/bin/env python3
"""Side-by-side gateway harness (driven by benches/gateway.sh, which installs wrk,
nginx and haproxy and builds the binaries).

One fixed upstream (bench_upstream: a minimal hyper server, 51-byte JSON or 16 KiB)
and each contender in turn, all on loopback. The upstream and the contender are pinned
to CPU 1, the load generators to CPU 0. For each contender and scenario, several
rounds, medians reported:

- throughput at saturation: wrk, 1 thread, C connections, D seconds;
- CPU microseconds per request of the contender's processes (utime+stime from
  /proc/<pid>/stat over the wrk run, divided by the requests wrk completed) and their
  RSS after the run;
- upstream connections opened per 1,000 requests (the upstream's own counters);
- latency p50/p99/p99.9 at a fixed offered rate below every contender's saturation,
  from bench_loadgen (open loop, corrected for coordinated omission like wrk2).

Contenders: direct (the floor), a minimal hyper hop, nginx proxy_pass with upstream
keepalive, HAProxy plain, HAProxy verifying an HS256 JWT (signature, exp, iss, the
subject injected as a header), pulse-proxy alone (no auth), and the Pulse gateway as
shipped (`full_stack backend`: request id, JWT, revocation and stamp checks, RBAC,
breaker, signed internal credential, proxy).
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_CPU = "0"
SERVER_CPU = "1"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc=None, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode}")
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def pinned(cmd, cpu):
    return ["taskset", "-c", cpu] + cmd


def descendants(pid):
    """pid and every process below it (nginx's workers, for one)."""
    out = [pid]
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return out
    for child in children:
        out.extend(descendants(int(child)))
    return out


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def upstream_stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_harness/stats", timeout=5) as r:
        return json.loads(r.read())


def hs256_token(secret, claims):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


class Contender:
    """A process (tree) serving `url`, started by `start` and stopped by `stop`."""

    def __init__(self, name, start, path, headers=None):
        self.name, self._start, self.path = name, start, path
        self.headers = headers or {}
        self.proc = None
        self.port = None

    def start(self, ctx):
        self.proc, self.port, extra = self._start(ctx)
        self.headers.update(extra or {})

    def pids(self):
        return descendants(self.proc.pid) if self.proc else []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def run_wrk(port, path, headers, connections, seconds):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(pinned(cmd, LOAD_CPU), capture_output=True, text=True, check=True).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    requests = int(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {
        "requests": requests,
        "rps": rps,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def run_loadgen(binary, port, path, headers, rate, connections, seconds):
    cmd = [binary, "--url", f"http://127.0.0.1:{port}{path}", "--rate", str(rate),
           "--connections", str(connections), "--duration", str(seconds), "--warmup", "1"]
    for k, v in headers.items():
        cmd += ["--header", f"{k}: {v}"]
    out = subprocess.run(pinned(cmd, LOAD_CPU), capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(contender, ctx, connections, seconds, rate, rounds):
    rows = []
    for _ in range(rounds):
        # warm the pools, then measure
        run_wrk(contender.port, contender.path, contender.headers, connections, 1)
        pids = contender.pids()
        before_cpu = cpu_ticks(pids)
        before_up = upstream_stats(ctx["upstream_port"])
        wrk = run_wrk(contender.port, contender.path, contender.headers, connections, seconds)
        after_up = upstream_stats(ctx["upstream_port"])
        cpu = cpu_ticks(pids) - before_cpu
        served = max(1, after_up["requests"] - before_up["requests"])
        opened = after_up["connections"] - before_up["connections"]
        lat = run_loadgen(ctx["loadgen"], contender.port, contender.path, contender.headers,
                          rate, connections, seconds)
        rows.append({
            "rps": wrk["rps"],
            "cpu_us": cpu * 1e6 / CLK_TCK / max(1, wrk["requests"]),
            "rss_mib": rss_kib(pids) / 1024,
            "conns_per_1k": opened * 1000 / served,
            "bad": wrk["non_2xx"] + wrk["socket_errors"] + lat["errors"] + lat["non_2xx"],
            "p50": lat["p50_us"], "p99": lat["p99_us"], "p999": lat["p999_us"],
            "lat_rate": lat["achieved_rate"],
        })
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["bad"] = sum(r["bad"] for r in rows)
    return med


# ------------------------------------------------------------------ contenders

def start_direct(ctx):
    return ctx["upstream_proc"], ctx["upstream_port"], {}


def start_binary(binary, extra):
    def start(ctx):
        port = free_port()
        cmd = [binary, "--addr", f"127.0.0.1:{port}", "--upstream",
               f"127.0.0.1:{ctx['upstream_port']}"] + extra
        proc = subprocess.Popen(pinned(cmd, SERVER_CPU), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_port(port, proc)
        return proc, port, {}
    return start


def start_nginx(ctx):
    port = free_port()
    d = tempfile.mkdtemp(prefix="pulse-nginx-", dir=ctx["tmp"])
    conf = f"""
worker_processes 1;
daemon off;
master_process on;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  upstream up {{ server 127.0.0.1:{ctx['upstream_port']}; keepalive 512; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    keepalive_requests 1000000;
    location /api/etl/ {{
      proxy_pass http://up/api/v1/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }}
  }}
}}
"""
    open(f"{d}/nginx.conf", "w").write(conf)
    proc = subprocess.Popen(pinned(["nginx", "-c", f"{d}/nginx.conf", "-p", d], SERVER_CPU),
                            stdout=subprocess.DEVNULL, stderr=open(f"{d}/stderr.log", "ab"))
    wait_port(port, proc)
    return proc, port, {}


def start_haproxy(jwt):
    def start(ctx):
        port = free_port()
        d = tempfile.mkdtemp(prefix="pulse-haproxy-", dir=ctx["tmp"])
        checks = ""
        if jwt:
            checks = f"""
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_header_query('$.alg') -m str HS256 }}
  http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify("HS256","{ctx['jwt_secret']}") -m int 1 }}
  http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_payload_query('$.iss') -m str pulse-gateway }}
  http-request deny deny_status 401 if {{ var(txn.bearer),jwt_payload_query('$.exp','int'),sub(txn.now) -m int le 0 }}
  http-request set-header X-User-ID %[var(txn.bearer),jwt_payload_query('$.sub')]
"""
        conf = f"""
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
{checks}
  http-request replace-path /api/etl/(.*) /api/v1/\\1
  default_backend be
backend be
  server up 127.0.0.1:{ctx['upstream_port']} maxconn 1000
"""
        open(f"{d}/haproxy.cfg", "w").write(conf)
        proc = subprocess.Popen(pinned(["haproxy", "-db", "-f", f"{d}/haproxy.cfg"], SERVER_CPU),
                                stdout=subprocess.DEVNULL, stderr=open(f"{d}/stderr.log", "ab"))
        wait_port(port, proc)
        headers = {}
        if jwt:
            token = hs256_token(ctx["jwt_secret"], {
                "iss": "pulse-gateway", "sub": "bench-user",
                "exp": int(time.time()) + 3600, "iat": int(time.time())})
            headers = {"Authorization": f"Bearer {token}"}
        return proc, port, headers
    return start


def start_gateway(ctx):
    port = free_port()
    metrics = free_port()
    data = tempfile.mkdtemp(prefix="pulse-gw-", dir=ctx["tmp"])
    log = open(os.path.join(data, "gateway.log"), "ab")
    cmd = [ctx["full_stack"], "--backend-addr", f"127.0.0.1:{port}",
           "--etl-url", f"http://127.0.0.1:{ctx['upstream_port']}",
           "--data-dir", data, "--log-format", "json", "backend"]
    env = dict(os.environ, PULSE_METRICS_ADDR=f"127.0.0.1:{metrics}",
               RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    proc = subprocess.Popen(pinned(cmd, SERVER_CPU), stdout=log, stderr=log, env=env)
    wait_port(port, proc, timeout=120)
    body = json.dumps({"email": "admin@pulse.local", "password": "admin"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/login", data=body,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        token = json.loads(r.read())["access_token"]
    return proc, port, {"Authorization": f"Bearer {token}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True, help="where the release examples are")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rate", type=int, default=10000,
                    help="the fixed offered rate for the latency run (req/s)")
    ap.add_argument("--only", default="", help="comma-separated contender names")
    ap.add_argument("--scenarios", default="c32,c256,body16k",
                    help="c32 (51 B, 32 connections), c256, body16k (16 KiB, 32 connections)")
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args()

    b = args.bin_dir
    contenders = [
        Contender("direct", start_direct, "/api/v1/jobs"),
        Contender("hyper hop", start_binary(f"{b}/bench_hop", []), "/api/v1/jobs"),
        Contender("nginx", start_nginx, "/api/etl/jobs"),
        Contender("haproxy", start_haproxy(False), "/api/etl/jobs"),
        Contender("haproxy+jwt", start_haproxy(True), "/api/etl/jobs"),
        Contender("pulse-proxy", start_binary(f"{b}/bench_pulse_proxy", []), "/api/etl/jobs"),
        Contender("pulse gateway", start_gateway, "/api/etl/jobs"),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        contenders = [c for c in contenders if c.name in wanted]

    tmp = tempfile.mkdtemp(prefix="pulse-gw-bench-")
    results = {}
    try:
        for scenario in args.scenarios.split(","):
            connections = 256 if scenario == "c256" else 32
            body = 16384 if scenario == "body16k" else 51
            up_port = free_port()
            up = subprocess.Popen(pinned([f"{b}/bench_upstream", "--addr", f"127.0.0.1:{up_port}",
                                          "--body-bytes", str(body)], SERVER_CPU),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(up_port, up)
            ctx = {"upstream_port": up_port, "upstream_proc": up, "tmp": tmp,
                   "loadgen": f"{b}/bench_loadgen", "full_stack": f"{b}/full_stack",
                   "jwt_secret": "harness-secret-0123456789abcdef0123456789"}
            print(f"\n== {scenario}: {connections} connections, {body}-byte answers, "
                  f"wrk {args.seconds} s x {args.rounds}, latency at {args.rate} req/s", flush=True)
            print(f"{'contender':<14} {'req/s':>9} {'CPU us/req':>10} {'RSS MiB':>8} "
                  f"{'conns/1k':>8} {'p50 us':>7} {'p99 us':>7} {'p99.9 us':>8} {'bad':>5}", flush=True)
            try:
                for c in contenders:
                    try:
                        c.start(ctx)
                        m = measure(c, ctx, connections, args.seconds, args.rate, args.rounds)
                    finally:
                        if c.name != "direct":
                            c.stop()
                        else:
                            c.proc = None
                    results.setdefault(scenario, {})[c.name] = m
                    print(f"{c.name:<14} {m['rps']:>9.0f} {m['cpu_us']:>10.1f} {m['rss_mib']:>8.1f} "
                          f"{m['conns_per_1k']:>8.2f} {m['p50']:>7.0f} {m['p99']:>7.0f} "
                          f"{m['p999']:>8.0f} {m['bad']:>5}", flush=True)
            finally:
                up.terminate()
                up.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print("\nCPU us/req: the contender's processes only (the upstream and the load generator "
          "excluded); conns/1k: upstream connections opened per 1,000 upstream requests; "
          "latency from bench_loadgen's intended send times (coordinated omission corrected); "
          "bad: non-2xx answers and socket errors over all rounds (should be 0).")


if __name__ == "__main__":
    sys.exit(main())
