#!/usr/bin/env python3
"""Load benchmark for OpenAI-compatible servers, in the manner of vLLM's benchmark_serving.py.

Python 3.9+, standard library only (asyncio streams speaking HTTP/1.1 directly), so it runs with
any interpreter against any server: `lathe serve`, llama.cpp's llama-server, vLLM, ...

    python3 bench/serve_load.py --base-url http://127.0.0.1:8080 --num-prompts 64 \\
        --concurrency 1 4 16 --request-rate 0.5 inf --json out.json

Request set (seeded, the same for every server): request i gets a prompt of L_in words and asks
for exactly L_out tokens; every run has the same lengths and words of its own (make_requests).
Both lengths are drawn from a log-normal distribution (ShareGPT's lengths are roughly
log-normal), given by its mean and the sigma of the underlying normal, then rounded and clipped
to [min, max]:
    L = clip(round(exp(N(ln(mean) - sigma^2 / 2, sigma))), min, max)     (so E[L] = mean before clipping)
The prompt is an instruction sentence followed by L_in words drawn from a fixed list of common
short English words (each one token in the usual BPE vocabularies, so L_in is close to the token
count with any tokenizer; the server's own count, usage.prompt_tokens, is what the results
report). Every request is a streaming chat completion (POST /v1/chat/completions) with
max_tokens = L_out, "ignore_eos": true (so the server generates exactly L_out tokens; lathe and
llama-server accept it), stream_options.include_usage = true, the given temperature (0 = greedy).

Arrivals: --request-rate R sends request i at the i-th arrival of a Poisson process of rate R
requests/s (R = inf: all at t = 0); --concurrency N keeps N requests in flight (closed loop: a
request is sent when one finishes). Several values of each may be given; every value is one run,
one after the other (concurrency values first).

Metrics per run (vLLM's definitions, times on the client's monotonic clock):
  duration     first request due -> last request finished
  TTFT         request due -> first non-empty content chunk. A request is "due" at its Poisson
               arrival or when a closed-loop worker takes it, so TTFT includes waiting in the
               server's queue for a free slot (and any client lateness, reported as lateness_max)
  TPOT         per request, (latency - TTFT) / (output tokens - 1), latency = due -> last content
               chunk; requests with one output token have none
  ITL          every gap between consecutive content chunks of a request (a server that puts
               several tokens into one chunk shows longer, fewer gaps: tokens_per_chunk says)
  E2E          request due -> end of the stream
  output tokens  usage.completion_tokens of the final usage chunk; where a server sends no usage,
               the number of non-empty content chunks (usage_missing counts those requests)
A request fails on a non-200 status, an error event in the stream, a broken or unterminated
stream, or the per-request --timeout; failures are counted (by reason, the first messages kept),
never fatal. A completed request whose completion_tokens differs from its max_tokens (the server
ignored ignore_eos or max_tokens) is counted in length_mismatch.

Output: a block per run and a summary table on stdout; --json FILE writes the configuration,
every run's metrics and every request's record.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import statistics
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field

# Common short English words, one token each in GPT-2/Llama/SmolLM-style BPE vocabularies when
# preceded by a space. Fixed: changing the list changes every request set.
WORDS = """the of and to in is was for on that with as by at from his it an were are which be
this has had not but they have one their first new also after been who its she two all her other
time more there into over some only about these can when years most than world three year may
many then would each made city used under out during such between while later state part known
film up through same since four where both team high school well second war best long day life
work end music back set old way final group found area main around top great five game own
family still use left early based last local name off being every early major play south north
west east small house line large show make took took home well point side began down number
around city club came held order like along power good full next field given case year week
""".split()
WORDS = list(dict.fromkeys(WORDS))  # in first-seen order, each once
INSTRUCTION = "Continue the following list of words with more words in the same style:"


def lognormal_lengths(rng: random.Random, n: int, mean: float, sigma: float, lo: int, hi: int) -> list[int]:
    mu = math.log(mean) - sigma * sigma / 2
    return [min(hi, max(lo, int(round(rng.lognormvariate(mu, sigma))))) for _ in range(n)]


@dataclass
class Request:
    index: int
    prompt: str
    prompt_words: int
    max_tokens: int


def make_requests(args, run_no: int) -> list[Request]:
    """The lengths depend on --seed only; the words also on the run's number (the warm-up is -1),
    so no run repeats an earlier run's prompts: a server's prefix cache can reuse the shared
    start of every prompt (chat template, instruction), as with a common system prompt, but not
    whole prompts it saw before."""
    rng = random.Random(args.seed)
    ins = lognormal_lengths(rng, args.num_prompts, args.input_mean, args.input_sigma, args.input_min, args.input_max)
    outs = lognormal_lengths(rng, args.num_prompts, args.output_mean, args.output_sigma, args.output_min,
                             args.max_output)
    rng = random.Random(f"{args.seed}/{run_no}")
    reqs = []
    for i, (n_in, n_out) in enumerate(zip(ins, outs)):
        words = " ".join(rng.choice(WORDS) for _ in range(n_in))
        reqs.append(Request(i, f"{INSTRUCTION} {words}", n_in, n_out))
    return reqs


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 over asyncio streams: one connection per request (Connection: close), chunked or
# length-delimited or read-to-EOF bodies; enough for the servers this measures.

class HttpError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


async def open_request(url: urllib.parse.SplitResult, method: str, path: str, body: bytes | None,
                       headers: dict[str, str]):
    if url.scheme != "http":
        raise HttpError("connect", f"only http:// URLs are supported (got {url.scheme}://)")
    host, port = url.hostname or "127.0.0.1", url.port or 80
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    except OSError as e:
        raise HttpError("connect", f"cannot connect to {host}:{port}: {e}") from e
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close", "Accept: */*"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        writer.close()
        raise HttpError("http", "the server closed the connection without an answer")
    parts = status_line.decode("latin-1").split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    hdrs: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, reader, writer


async def body_chunks(reader: asyncio.StreamReader, hdrs: dict[str, str]):
    """Yields the body's bytes as they arrive."""
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise HttpError("stream", "connection closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()  # the empty line after the last chunk (no trailers expected)
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in hdrs:
        remaining = int(hdrs["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 1 << 16))
            if not data:
                raise HttpError("stream", "connection closed before Content-Length bytes")
            remaining -= len(data)
            yield data
    else:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                return
            yield data


async def http_json(url, method: str, path: str, body=None, headers=None, timeout=10.0):
    async def go():
        raw = json.dumps(body).encode() if body is not None else None
        status, hdrs, reader, writer = await open_request(url, method, path, raw, headers or {})
        try:
            data = b"".join([c async for c in body_chunks(reader, hdrs)])
        finally:
            writer.close()
        return status, data
    return await asyncio.wait_for(go(), timeout)


# ---------------------------------------------------------------------------------------------

@dataclass
class Result:
    index: int
    max_tokens: int
    prompt_words: int
    ok: bool = False
    reason: str = ""
    error: str = ""
    due: float = 0.0            # seconds since the run's start
    lateness: float = 0.0       # sent - due
    ttft: float | None = None
    latency: float | None = None  # due -> last content chunk
    e2e: float | None = None      # due -> end of stream
    output_tokens: int = 0
    content_chunks: int = 0
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    usage_missing: bool = False
    finish_reason: str | None = None
    itl: list[float] = field(default_factory=list)


async def stream_one(url, args, req: Request, run_start: float, due: float, max_tokens: int | None = None) -> Result:
    n_out = max_tokens if max_tokens is not None else req.max_tokens
    res = Result(req.index, n_out, req.prompt_words, due=due)
    body = {
        "model": args.model,
        "messages": [{"role": "user", "content": req.prompt}],
        "max_tokens": n_out,
        "temperature": args.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    if args.seed_per_request:
        body["seed"] = args.seed + req.index
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    t_due = run_start + due
    sent = time.perf_counter()
    res.lateness = sent - t_due
    last_content = None
    usage = None
    done = False

    async def go():
        nonlocal last_content, usage, done
        status, hdrs, reader, writer = await open_request(url, "POST", url.path.rstrip("/") + "/v1/chat/completions",
                                                          json.dumps(body).encode(), headers)
        try:
            if status != 200:
                data = b"".join([c async for c in body_chunks(reader, hdrs)])
                raise HttpError(f"http {status}", data.decode("utf-8", "replace")[:300])
            buf = b""
            async for data in body_chunks(reader, hdrs):
                now = time.perf_counter()
                buf += data.replace(b"\r\n", b"\n")
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    payload = b"\n".join(l[5:].lstrip() for l in event.split(b"\n") if l.startswith(b"data:"))
                    if not payload:
                        continue
                    if payload.strip() == b"[DONE]":
                        done = True
                        continue
                    try:
                        chunk = json.loads(payload)
                    except json.JSONDecodeError as e:
                        raise HttpError("stream", f"bad JSON in an event: {payload[:200]!r}") from e
                    if "error" in chunk and not chunk.get("choices"):
                        raise HttpError("error event", json.dumps(chunk["error"])[:300])
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                        if choice.get("finish_reason"):
                            res.finish_reason = choice["finish_reason"]
                        if text:
                            if last_content is None:
                                res.ttft = now - t_due
                            else:
                                res.itl.append(now - last_content)
                            last_content = now
                            res.content_chunks += 1
        finally:
            writer.close()

    try:
        await asyncio.wait_for(go(), args.timeout)
        end = time.perf_counter()
        if not done:
            raise HttpError("stream", "the stream ended without data: [DONE]")
        if last_content is None:
            raise HttpError("no content", "the stream carried no content")
        res.e2e = end - t_due
        res.latency = last_content - t_due
        if usage and isinstance(usage.get("completion_tokens"), int):
            res.output_tokens = usage["completion_tokens"]
            res.prompt_tokens = usage.get("prompt_tokens")
            res.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        else:
            res.usage_missing = True
            res.output_tokens = res.content_chunks
        res.ok = True
    except asyncio.TimeoutError:
        res.reason, res.error = "timeout", f"no complete answer within {args.timeout} s"
    except HttpError as e:
        res.reason, res.error = e.reason, str(e)
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        res.reason, res.error = "connection", f"{type(e).__name__}: {e}"
    return res


def pct(values: list[float], p: float) -> float | None:
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values) if values else None, "p50": pct(values, 50),
            "p90": pct(values, 90), "p99": pct(values, 99), "max": max(values) if values else None}


def run_metrics(results: list[Result], duration: float) -> dict:
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    reasons: dict[str, int] = {}
    for r in failed:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    tpot = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    itl = [g for r in ok for g in r.itl]
    chunks = sum(r.content_chunks for r in ok)
    return {
        "completed": len(ok),
        "failed": len(failed),
        "failures_by_reason": reasons,
        "failure_examples": [f"#{r.index} {r.reason}: {r.error}" for r in failed[:5]],
        "duration_s": duration,
        "request_throughput": len(ok) / duration if duration > 0 else None,
        "output_tokens": out_tokens,
        "requested_output_tokens": sum(r.max_tokens for r in ok),
        "length_mismatch": sum(1 for r in ok if r.output_tokens != r.max_tokens),
        "usage_missing": sum(1 for r in ok if r.usage_missing),
        "prompt_tokens": sum(prompt_tokens) if prompt_tokens else None,
        "prompt_tokens_mean": statistics.fmean(prompt_tokens) if prompt_tokens else None,
        "cached_prompt_tokens": sum(r.cached_tokens or 0 for r in ok),
        "output_throughput": out_tokens / duration if duration > 0 else None,
        "total_token_throughput": (out_tokens + sum(prompt_tokens)) / duration if duration > 0 and prompt_tokens else None,
        "tokens_per_chunk": out_tokens / chunks if chunks else None,
        "lateness_max_s": max((r.lateness for r in results), default=0.0),
        "ttft_s": summary([r.ttft for r in ok]),
        "tpot_s": summary(tpot),
        "itl_s": summary(itl),
        "e2e_s": summary([r.e2e for r in ok]),
    }


async def run_load(url, args, reqs: list[Request], mode: str, value: float) -> tuple[list[Result], float]:
    start = time.perf_counter()
    results: list[Result] = []
    if mode == "concurrency":
        queue = list(reversed(reqs))

        async def worker():
            while queue:
                req = queue.pop()
                results.append(await stream_one(url, args, req, start, time.perf_counter() - start))
        await asyncio.gather(*(worker() for _ in range(int(value))))
    else:
        arrivals_rng = random.Random(args.seed + 1)
        due, tasks = 0.0, []
        for req in reqs:
            delay = start + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(stream_one(url, args, req, start, due)))
            if not math.isinf(value):
                due += arrivals_rng.expovariate(value)
        results = list(await asyncio.gather(*tasks))
    duration = time.perf_counter() - start
    results.sort(key=lambda r: r.index)
    return results, duration


def fmt_ms(x):
    return "-" if x is None else f"{x * 1000:.1f}"


def fmt_num(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def print_run(label: str, m: dict):
    print(f"============ {label} ============")
    rows = [
        ("Successful requests", m["completed"]),
        ("Failed requests", f"{m['failed']} {m['failures_by_reason'] or ''}".strip()),
        ("Benchmark duration (s)", fmt_num(m["duration_s"])),
        ("Prompt tokens / cached (server)", f"{m['prompt_tokens'] if m['prompt_tokens'] is not None else '-'}"
                                                   f" / {m['cached_prompt_tokens']}"),
        ("Output tokens / requested", f"{m['output_tokens']} / {m['requested_output_tokens']}"),
        ("Length mismatches / usage missing", f"{m['length_mismatch']} / {m['usage_missing']}"),
        ("Request throughput (req/s)", fmt_num(m["request_throughput"], 3)),
        ("Output token throughput (tok/s)", fmt_num(m["output_throughput"])),
        ("Total token throughput (tok/s)", fmt_num(m["total_token_throughput"])),
        ("Tokens per content chunk", fmt_num(m["tokens_per_chunk"])),
        ("Client lateness max (ms)", fmt_ms(m["lateness_max_s"])),
    ]
    for name, key in (("TTFT", "ttft_s"), ("TPOT", "tpot_s"), ("ITL", "itl_s"), ("E2E", "e2e_s")):
        s = m[key]
        rows.append((f"{name} mean / p50 / p99 (ms)", f"{fmt_ms(s['mean'])} / {fmt_ms(s['p50'])} / {fmt_ms(s['p99'])}"))
    for name, value in rows:
        print(f"{name:<36}{value}")
    for e in m["failure_examples"]:
        print(f"  failure {e}")
    sys.stdout.flush()


def print_table(runs: list[dict]):
    head = ["load", "ok", "fail", "s", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
            "ITL p50", "ITL p99"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
    for r in runs:
        m = r["metrics"]
        cells = [r["label"], m["completed"], m["failed"], fmt_num(m["duration_s"], 1), fmt_num(m["request_throughput"], 3),
                 fmt_num(m["output_throughput"], 1), fmt_ms(m["ttft_s"]["p50"]), fmt_ms(m["ttft_s"]["p99"]),
                 fmt_ms(m["tpot_s"]["p50"]), fmt_ms(m["tpot_s"]["p99"]), fmt_ms(m["itl_s"]["p50"]), fmt_ms(m["itl_s"]["p99"])]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print("(times in ms)")


async def main_async(args) -> int:
    url = urllib.parse.urlsplit(args.base_url)
    if not args.model:
        try:
            status, data = await http_json(url, "GET", url.path.rstrip("/") + "/v1/models")
            args.model = json.loads(data)["data"][0]["id"] if status == 200 else "default"
        except Exception:
            args.model = "default"
    reqs = make_requests(args, 0)
    loads = [("concurrency", float(c)) for c in args.concurrency] + [("rate", r) for r in args.request_rate]
    if not loads:
        loads = [("rate", math.inf)]
    print(f"{args.base_url} model={args.model} prompts={len(reqs)} seed={args.seed} "
          f"prompt words mean={statistics.fmean(r.prompt_words for r in reqs):.1f} "
          f"output tokens mean={statistics.fmean(r.max_tokens for r in reqs):.1f} (sum {sum(r.max_tokens for r in reqs)})")
    sys.stdout.flush()
    warm = []
    warm_reqs = make_requests(args, -1)
    for i in range(args.warmup):
        w = await stream_one(url, args, warm_reqs[i % len(reqs)], time.perf_counter(), 0.0, max_tokens=min(16, args.max_output))
        warm.append(asdict(w))
        if not w.ok:
            print(f"warm-up request {i} failed: {w.reason}: {w.error}")
    runs = []
    for run_no, (mode, value) in enumerate(loads):
        reqs = make_requests(args, run_no)
        label = f"concurrency {int(value)}" if mode == "concurrency" else (
            "rate inf" if math.isinf(value) else f"rate {value:g}/s")
        if args.label:
            label = f"{args.label} {label}"
        results, duration = await run_load(url, args, reqs, mode, value)
        m = run_metrics(results, duration)
        print_run(label, m)
        runs.append({"label": label, "mode": mode, "value": None if math.isinf(value) else value,
                     "metrics": m, "requests": [asdict(r) for r in results]})
    print()
    print_table(runs)
    if args.json:
        config = {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in vars(args).items()}
        config["request_rate"] = [None if math.isinf(r) else r for r in args.request_rate]
        out = {"tool": "bench/serve_load.py", "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "host": platform.node(), "loadavg_start": os.getloadavg(), "config": config, "warmup": warm,
               "runs": runs}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if all(r["metrics"]["completed"] > 0 for r in runs) else 1


def parse_rate(s: str) -> float:
    v = float(s)  # float("inf") works
    if not v > 0:
        raise argparse.ArgumentTypeError(f"request rate must be > 0 or inf (got {s})")
    return v


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8080", help="server root (http:// only)")
    p.add_argument("--model", default="", help="the request's model field (default: the server's first /v1/models id)")
    p.add_argument("--api-key", default="", help="sent as Authorization: Bearer KEY")
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seeds the request set and the Poisson arrivals")
    p.add_argument("--request-rate", type=parse_rate, nargs="*", default=[],
                   help="Poisson arrivals at R requests/s (inf = all at once); several values = several runs")
    p.add_argument("--concurrency", type=int, nargs="*", default=[],
                   help="closed loop with N requests in flight; several values = several runs")
    p.add_argument("--input-mean", type=float, default=128, help="mean prompt length (words)")
    p.add_argument("--input-sigma", type=float, default=0.6, help="sigma of the log-normal prompt length")
    p.add_argument("--input-min", type=int, default=16)
    p.add_argument("--input-max", type=int, default=1024)
    p.add_argument("--output-mean", type=float, default=64, help="mean requested output length (tokens)")
    p.add_argument("--output-sigma", type=float, default=0.6, help="sigma of the log-normal output length")
    p.add_argument("--output-min", type=int, default=4)
    p.add_argument("--max-output", type=int, default=256, help="largest max_tokens asked (clips the draw)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed-per-request", action="store_true", help="send seed = --seed + index in each request")
    p.add_argument("--warmup", type=int, default=1, help="requests sent one by one before the runs (16 tokens each)")
    p.add_argument("--timeout", type=float, default=300.0, help="per-request limit (s), stream included")
    p.add_argument("--label", default="", help="prefix of each run's label")
    p.add_argument("--json", default="", help="write the results here")
    args = p.parse_args()
    if args.num_prompts < 1:
        p.error("--num-prompts must be >= 1")
    if any(c < 1 for c in args.concurrency):
        p.error("--concurrency values must be >= 1")
    if not (0 < args.input_min <= args.input_max) or not (0 < args.output_min <= args.max_output):
        p.error("length bounds must satisfy 0 < min <= max")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
