#!/usr/bin/env python3
"""Instructions per proxied request, counted by valgrind (callgrind or DHAT).

Wall-clock figures on a shared 2-core VM move by +-30 % from run to run; an
instruction count does not. This driver starts bench_upstream, then the Pulse gateway
(`full_stack backend`) or pulse-proxy alone (`bench_pulse_proxy`) under valgrind, logs
in, sends warm-up requests on one keep-alive connection, switches instrumentation on
(`callgrind_control -i on`), sends N more requests on the same connection, switches it
off and prints the totals divided by N.

    python3 benches/callgrind.py --bin-dir target/release/examples [--target proxy]
        [--requests 2000] [--out cg.out] [--tool dhat]

With `--out`, callgrind's file is kept for `callgrind_annotate --inclusive=yes`.
With `--tool dhat`, allocations per request are printed instead (over the whole run,
start-up, login and warm-up included, divided by the number of requests sent). DHAT sees only malloc: build the
binaries on the system allocator for it,
`RUSTFLAGS="--cfg pulse_system_alloc" cargo build --release --example full_stack ...`
(they ship with mimalloc).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gateway import free_port, wait_port  # noqa: E402


def receive(sock):
    """The next bytes of an answer; a connection closed mid-answer is an error, not a
    loop that never ends."""
    chunk = sock.recv(65536)
    if not chunk:
        raise RuntimeError("connection closed mid-answer")
    return chunk


def request(sock, path, headers):
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall((head + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += receive(sock)
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        rest += receive(sock)
    if status != 200:
        raise RuntimeError(f"status {status}: {rest[:200]!r}")


def login(port):
    body = json.dumps({"email": "admin@pulse.local", "password": "admin"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/login", data=body,
                                 headers={"content-type": "application/json"})
    for _ in range(100):
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())["access_token"]
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("login failed")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--target", choices=["gateway", "proxy"], default="gateway")
    ap.add_argument("--tool", choices=["callgrind", "dhat"], default="callgrind")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--out", help="keep valgrind's output file here")
    args = ap.parse_args()

    b = args.bin_dir
    tmp = tempfile.mkdtemp(prefix="pulse-cg-")
    out = args.out or os.path.join(tmp, f"{args.tool}.out")
    up_port = free_port()
    up = subprocess.Popen([f"{b}/bench_upstream", "--addr", f"127.0.0.1:{up_port}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(up_port, up)
    port = free_port()
    valgrind = ["valgrind", "--quiet", f"--tool={args.tool}"]
    if args.tool == "callgrind":
        valgrind += ["--instr-atstart=no", f"--callgrind-out-file={out}"]
    else:
        valgrind += [f"--dhat-out-file={out}"]
    env = dict(os.environ, RUST_LOG="warn")
    if args.target == "gateway":
        env["PULSE_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"
        cmd = [f"{b}/full_stack", "--backend-addr", f"127.0.0.1:{port}",
               "--etl-url", f"http://127.0.0.1:{up_port}", "--data-dir", tmp,
               "--log-format", "json", "backend"]
    else:
        cmd = [f"{b}/bench_pulse_proxy", "--addr", f"127.0.0.1:{port}",
               "--upstream", f"127.0.0.1:{up_port}"]
    # Both rewrite /api/etl/ to the upstream's /api/v1/.
    path = "/api/etl/jobs"
    log = open(os.path.join(tmp, "server.log"), "ab")
    proc = subprocess.Popen(valgrind + cmd, stdout=log, stderr=log, env=env)
    try:
        wait_port(port, proc, timeout=300)
        headers = {}
        if args.target == "gateway":
            headers["Authorization"] = f"Bearer {login(port)}"
        sock = socket.create_connection(("127.0.0.1", port))
        for _ in range(args.warmup):
            request(sock, path, headers)
        if args.tool == "callgrind":
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                           stdout=subprocess.DEVNULL)
        for _ in range(args.requests):
            request(sock, path, headers)
        if args.tool == "callgrind":
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True,
                           stdout=subprocess.DEVNULL)
        sock.close()
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        up.terminate()
        up.wait()
    if args.tool == "callgrind":
        total = 0
        with open(out) as f:
            for line in f:
                if line.startswith("totals:") or line.startswith("summary:"):
                    total = int(line.split()[1])
        print(f"{args.target}: {total / args.requests:,.0f} instructions per request "
              f"({args.requests} requests; {out})")
    else:
        with open(out) as f:
            dhat = json.load(f)
        blocks = sum(pp["tb"] for pp in dhat["pps"])
        count = sum(pp["tbk"] for pp in dhat["pps"])
        n = args.requests + args.warmup
        print(f"{args.target}: {count / n:.1f} allocations, {blocks / n:,.0f} bytes per "
              f"request over the whole run, start-up and login included ({n} requests; {out})")


if __name__ == "__main__":
    sys.exit(main())
