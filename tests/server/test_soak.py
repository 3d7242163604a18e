"""1,000 requests with random disconnects, bad bodies and cancellations leave nothing running and
the server's memory flat (issue: abandoned requests must not keep decoding or holding slots).
Label slow: about a minute on 2 cores."""
import json
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from lathe_server import LatheServer


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def finished(metrics):
    return sum(metrics[f'lathe_requests_total{{outcome="{o}"}}'] for o in ("ok", "cancelled", "failed"))


def one(port, rng_seed):
    rng = random.Random(rng_seed)
    kind = rng.choice(["whole", "stream", "drop_stream", "drop_whole", "garbage", "bad_field", "whole", "stream"])
    body = {"messages": [{"role": "user", "content": rng.choice(["Hi", "Name a colour.", "Count to three.",
                                                                 "Tell me about the moon."])}],
            "max_tokens": rng.randint(1, 12), "temperature": rng.choice([0, 0.8]), "seed": rng_seed}
    if kind.endswith("stream"):
        body["stream"] = True
    if kind.startswith("drop"):
        body["max_tokens"] = 400
        body["ignore_eos"] = True
    data = json.dumps(body).encode()
    if kind == "garbage":
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    if kind == "bad_field":
        data = json.dumps({**body, "temperature": 7}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
                  + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        if kind.startswith("drop"):
            time.sleep(rng.uniform(0.0, 0.3))
            return kind
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        status = int(answer.split(b" ", 2)[1])
        expected = 400 if kind in ("garbage", "bad_field") else 200
        assert status == expected, (kind, answer[:300])
        return kind
    finally:
        s.close()


def test_thousand_requests_leave_nothing_running_and_memory_flat():
    with LatheServer("--parallel", "4", "-c", "1024", "--max-queue", "256") as server:
        pid = server.proc.pid
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: one(server.port, i), range(100)))  # warm-up: caches, pools, arenas
        time.sleep(1)
        before = rss_kib(pid)
        finished_before = finished(server.metrics())
        with ThreadPoolExecutor(8) as pool:
            kinds = list(pool.map(lambda i: one(server.port, i), range(100, 1100)))
        assert len(kinds) == 1000
        # Every request with a valid body ends (ok or cancelled); dropped ones may still be on
        # their way in when the last client returns, so wait for their count, then for idle.
        valid = sum(k not in ("garbage", "bad_field") for k in kinds)
        deadline = time.time() + 30
        while time.time() < deadline:
            m = server.metrics()
            if (finished(m) >= finished_before + valid and m["lathe_requests_running"] == 0
                    and m["lathe_requests_waiting"] == 0):
                break
            time.sleep(0.1)
        assert finished(m) >= finished_before + valid, m
        assert m["lathe_requests_running"] == 0 and m["lathe_requests_waiting"] == 0, m
        drops = sum(k.startswith("drop") for k in kinds)
        assert m['lathe_requests_total{outcome="cancelled"}'] >= drops * 0.9  # a few may finish before the drop
        after = rss_kib(pid)
        print(f"RSS before {before} KiB, after 1000 requests {after} KiB ({drops} dropped)")
        assert after - before < 16 * 1024, f"RSS grew from {before} to {after} KiB"
        assert server.stop() == 0
