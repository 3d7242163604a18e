"""lathe serve against the official OpenAI client and raw HTTP: every endpoint, streaming against
non-streaming, answers alone and in company, every error, the API key, CORS, the queue limit,
disconnects, stop strings, log-probabilities, metrics and shutdown. The expected answers come from
`lathe run` (the same model, greedy) and from the client's own parsing, never from numbers this
suite wrote down."""
import http.client
import json
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from lathe_server import LatheServer, MODEL, run_generated

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write one sentence about the sea.",
    "What is 2 + 2?",
    "Give me a word that rhymes with cat.",
    "Who wrote Hamlet?",
    "Describe a cat in five words.",
    "What do bees make?",
]


@pytest.fixture(scope="module")
def server():
    with LatheServer("--parallel", "4", "-c", "1024", "--max-body-size", "64K") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def raw(server, method, path, body=None, headers=None):
    """(status, headers, parsed JSON or text) of one request over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    text = r.read().decode("utf-8", "replace")
    conn.close()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return r.status, dict(r.getheaders()), parsed


def chat(client, question, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 24)
    return client.chat.completions.create(model="any", messages=[{"role": "user", "content": question}], **kw)


def stream_text(client, question, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 24)
    pieces, finish = [], None
    for chunk in client.chat.completions.create(model="any", messages=[{"role": "user", "content": question}],
                                                stream=True, **kw):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(pieces), finish


# ---- endpoints ----------------------------------------------------------------------------------

def test_health_and_models(server, client):
    status, _, body = raw(server, "GET", "/health")
    assert status == 200 and body == {"status": "ok"}
    models = client.models.list()
    assert len(models.data) == 1 and models.data[0].id == "SmolLM2-135M-Instruct.Q4_1"


def test_greedy_chat_equals_lathe_run(client):
    """At temperature 0 the server's answer is `lathe run --chat --temp 0` on the same message."""
    question = QUESTIONS[0]
    expected = run_generated("-m", MODEL, "--chat", "--system", "", "-p", question, "--temp", "0", "-n", "24", "-t", "1")
    answer = chat(client, question)
    assert answer.choices[0].message.content == expected
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage.completion_tokens <= 24 and answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_system_message_and_multi_turn(client):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a fruit."}]
    a = client.chat.completions.create(model="x", messages=messages, temperature=0, max_tokens=12)
    b = client.chat.completions.create(model="x", messages=messages, temperature=0, max_tokens=12)
    assert a.choices[0].message.content == b.choices[0].message.content
    # the second answer reused the conversation's cached tokens and still said the same
    assert b.usage.prompt_tokens_details.cached_tokens > 0


def test_stream_equals_whole(client):
    for question in QUESTIONS[:3]:
        whole = chat(client, question)
        text, finish = stream_text(client, question)
        assert text == whole.choices[0].message.content
        assert finish == whole.choices[0].finish_reason


def test_seeded_sampling_repeats(client):
    kw = dict(temperature=0.9, seed=1234, max_tokens=20)
    a = chat(client, QUESTIONS[2], **kw).choices[0].message.content
    b = chat(client, QUESTIONS[2], **kw).choices[0].message.content
    s, _ = stream_text(client, QUESTIONS[2], **kw)
    assert a == b == s


def test_stream_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}],
                                                 temperature=0, max_tokens=5, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 5
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")


def test_raw_stream_framing(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0, "stream": True}),
        {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/event-stream")
    events = [e for e in r.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        assert json.loads(e[6:])["object"] == "chat.completion.chunk"


def test_same_answer_alone_or_in_company(client):
    """Greedy answers do not depend on what else is running (continuous batching, slots)."""
    alone = [chat(client, q).choices[0].message.content for q in QUESTIONS]
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: chat(client, q).choices[0].message.content, QUESTIONS))
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:  # streamed and whole requests mixed
        mixed = list(pool.map(lambda iq: stream_text(client, iq[1])[0] if iq[0] % 2 else
                              chat(client, iq[1]).choices[0].message.content, enumerate(QUESTIONS)))
    assert together == alone
    assert mixed == alone


def test_completions_text_and_tokens(server, client):
    text = client.completions.create(model="x", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert text.object == "text_completion" and text.choices[0].finish_reason in ("stop", "length")
    status, _, tok = raw(server, "POST", "/tokenize", {"content": "The capital of France is", "add_special": True})
    assert status == 200
    by_ids = client.completions.create(model="x", prompt=tok["tokens"], max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == text.choices[0].text
    expected = run_generated("-m", MODEL, "-p", "The capital of France is", "--temp", "0", "-n", "8", "-t", "1")
    assert text.choices[0].text == expected
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="x", prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == text.choices[0].text


def test_tokenize_detokenize(server):
    text = "Hello world, héllo wörld! 123"
    status, _, tok = raw(server, "POST", "/tokenize", {"content": text})
    assert status == 200 and all(isinstance(t, int) for t in tok["tokens"])
    status, _, back = raw(server, "POST", "/detokenize", {"tokens": tok["tokens"]})
    assert status == 200 and back["content"] == text
    status, _, pieces = raw(server, "POST", "/tokenize", {"content": "Hello world", "with_pieces": True})
    assert "".join(p["piece"] for p in pieces["tokens"]) == "Hello world"


def test_stop_strings(client):
    question = "Count from 1 to 10 separated by commas."
    whole = chat(client, question, max_tokens=40).choices[0].message.content
    assert len(whole) > 20
    stop = whole[10:13]  # a piece of the greedy answer: the answer ends just before its first occurrence
    cut = chat(client, question, max_tokens=40, stop=[stop])
    assert cut.choices[0].message.content == whole[:whole.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed, finish = stream_text(client, question, max_tokens=40, stop=["no such text", stop])
    assert streamed == whole[:whole.index(stop)] and finish == "stop"
    nothing, finish = stream_text(client, question, max_tokens=40, stop=["no such text"])
    assert nothing == whole  # a stop string that never comes holds nothing back at the end


def test_logprobs(client):
    a = chat(client, QUESTIONS[3], max_tokens=6, logprobs=True, top_logprobs=3)
    content = a.choices[0].logprobs.content
    assert len(content) == a.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert entry.token == entry.top_logprobs[0].token  # greedy takes the most likely
        assert entry.logprob == pytest.approx(values[0])
    assert "".join(e.token for e in content) == a.choices[0].message.content
    pieces = []
    for chunk in client.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTIONS[3]}],
                                                temperature=0, max_tokens=6, logprobs=True, top_logprobs=3,
                                                stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            pieces += chunk.choices[0].logprobs.content
    assert [p.token for p in pieces] == [e.token for e in content]


def test_logit_bias_bans_a_token(server, client):
    first = chat(client, QUESTIONS[3], max_tokens=1, logprobs=True, top_logprobs=1).choices[0].logprobs.content[0]
    status, _, tok = raw(server, "POST", "/tokenize", {"content": first.token})
    banned = tok["tokens"][0]
    again = chat(client, QUESTIONS[3], max_tokens=1, logit_bias={str(banned): -100}, logprobs=True, top_logprobs=1)
    assert again.choices[0].logprobs.content[0].token != first.token


def test_metrics(server, client):
    chat(client, "Hi", max_tokens=3)
    m = server.metrics()
    for name in ("lathe_requests_running", "lathe_requests_waiting", "lathe_prompt_tokens_total",
                 "lathe_generated_tokens_total", "lathe_time_to_first_token_seconds_count",
                 "lathe_time_per_output_token_seconds_count"):
        assert name in m, name
    assert m["lathe_generated_tokens_total"] > 0
    assert m['lathe_time_to_first_token_seconds_bucket{le="+Inf"}'] == m["lathe_time_to_first_token_seconds_count"]


def test_web_page(server):
    status, headers, page = raw(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and "<html" in page.lower()
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing fetched from elsewhere


# ---- errors -------------------------------------------------------------------------------------

def expect_error(server, status, body, param=None, code=None, path="/v1/chat/completions", headers=None):
    got, _, answer = raw(server, "POST", path, body, headers)
    assert got == status, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.mark.parametrize("body,param", [
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2.5}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "frequency_penalty": 9}, "frequency_penalty"),
    ({"messages": [{"role": "user", "content": "hi"}], "seed": -1}, "seed"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": [1]}, "stop[0]"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"abc": 1}}, "logit_bias.abc"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}, "response_format.type"),
])
def test_bad_requests_are_400_naming_the_field(server, body, param):
    error = expect_error(server, 400, body, param=param)
    assert error["type"] == "invalid_request_error"


def test_invalid_json(server):
    expect_error(server, 400, b"{not json", param="body", code="invalid_json")
    expect_error(server, 400, b"[1, 2]", param="body", code="invalid_json")


def test_context_length_exceeded(server):
    long_text = "hello " * 1200  # over -c 1024
    expect_error(server, 400, {"messages": [{"role": "user", "content": long_text}]}, code="context_length_exceeded")
    expect_error(server, 400, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000},
                 code="context_length_exceeded")
    expect_error(server, 400, {"prompt": [999999]}, param="prompt[0]", path="/v1/completions")


def test_unknown_route_and_large_body(server):
    status, _, body = raw(server, "GET", "/v1/nothing")
    assert status == 404 and body["error"]["type"] == "not_found_error"
    big = {"messages": [{"role": "user", "content": "x" * (70 * 1024)}]}
    expect_error(server, 413, big, code="body_too_large")
    # a body under the limit but far over 8 KB is fine
    status, _, _ = raw(server, "POST", "/tokenize", {"content": "word " * 8000})
    assert status == 200


def test_bad_input_does_not_disturb_others(server, client):
    expected = chat(client, QUESTIONS[5], max_tokens=30).choices[0].message.content
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("a", chat(client, QUESTIONS[5], max_tokens=30)))
    t.start()
    for junk in (b"\x00\xff garbage", b'{"messages": [{"role": "user", "content": 5}]}', b"{" * 10000):
        raw(server, "POST", "/v1/chat/completions", junk)
    t.join()
    assert result["a"].choices[0].message.content == expected
    assert raw(server, "GET", "/health")[0] == 200


# ---- disconnects, queue, key, CORS, shutdown ----------------------------------------------------

def finished_total(metrics):
    return sum(metrics[f'lathe_requests_total{{outcome="{o}"}}'] for o in ("ok", "cancelled", "failed"))


def wait_idle(server, timeout=20, finished_at_least=0):
    """Waits until `finished_at_least` requests have ended in all (so that requests still on their
    way in are not missed: the gauges read 0 before they arrive too) and nothing runs or waits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = server.metrics()
        if (finished_total(m) >= finished_at_least and m["lathe_requests_running"] == 0
                and m["lathe_requests_waiting"] == 0):
            return m
        time.sleep(0.1)
    raise AssertionError(f"requests still running or not yet finished after {timeout} s: {server.metrics()}")


def long_request(stream):
    return json.dumps({"messages": [{"role": "user", "content": "Tell me a very long story about dragons."}],
                       "max_tokens": 900, "temperature": 1.0, "stream": stream, "ignore_eos": True}).encode()


def send_and_drop(server, stream, wait_s):
    s = socket.create_connection(("127.0.0.1", server.port))
    body = long_request(stream)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    if stream:
        s.recv(256)  # the stream started
    time.sleep(wait_s)
    s.close()


def test_disconnect_cancels(server):
    m = server.metrics()
    before, finished = m["lathe_requests_total{outcome=\"cancelled\"}"], finished_total(m)
    send_and_drop(server, stream=True, wait_s=0.3)
    send_and_drop(server, stream=False, wait_s=0.5)
    m = wait_idle(server, timeout=20, finished_at_least=finished + 2)  # 900 tokens would take far longer
    assert m["lathe_requests_total{outcome=\"cancelled\"}"] >= before + 2


def test_many_disconnects_leave_nothing_running(server):
    finished = finished_total(server.metrics())
    threads = [threading.Thread(target=send_and_drop, args=(server, i % 2 == 0, 0.05 * (i % 5))) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_idle(server, timeout=30, finished_at_least=finished + 24)


def test_queue_full_answers_503():
    with LatheServer("--parallel", "1", "--max-queue", "1", "-c", "1024") as s:
        sockets = []
        for _ in range(2):  # one running, one waiting
            c = socket.create_connection(("127.0.0.1", s.port))
            body = long_request(True)
            c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            sockets.append(c)
        deadline = time.time() + 10
        while time.time() < deadline and s.metrics()["lathe_requests_running"] + s.metrics()["lathe_requests_waiting"] < 2:
            time.sleep(0.05)
        status, headers, body = raw(s, "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
        assert status == 503 and headers.get("Retry-After") == "1" and body["error"]["code"] == "queue_full"
        for c in sockets:
            c.close()
        wait_idle(s, finished_at_least=2)


def test_api_key_and_cors():
    with LatheServer("--api-key", "secret", "--cors-origin", "https://example.org") as s:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert expect_error(s, 401, body)["type"] == "authentication_error"
        expect_error(s, 401, body, headers={"Authorization": "Bearer wrong"})
        assert raw(s, "POST", "/v1/chat/completions", body, {"Authorization": "Bearer secret"})[0] == 200
        assert raw(s, "POST", "/v1/chat/completions", body, {"X-Api-Key": "secret"})[0] == 200
        assert raw(s, "GET", "/health")[0] == 200  # public
        assert raw(s, "GET", "/metrics")[0] == 401
        status, headers, _ = raw(s, "OPTIONS", "/v1/chat/completions", headers={
            "Origin": "https://example.org", "Access-Control-Request-Method": "POST"})
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "https://example.org"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="secret", max_retries=0)
        assert c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=2).choices


def write_random_sae(path, d_in, d_sae, hook, seed=0):
    """A random standard SAE in SAELens's format (cfg.json + sae_weights.safetensors)."""
    import numpy as np
    from safetensors.numpy import save_file
    rng = np.random.default_rng(seed)
    w_dec = rng.normal(0, 1, (d_sae, d_in)).astype(np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    path.mkdir()
    save_file({"W_enc": rng.normal(0, 1 / np.sqrt(d_in), (d_in, d_sae)).astype(np.float32),
               "b_enc": np.zeros(d_sae, np.float32), "W_dec": w_dec, "b_dec": np.zeros(d_in, np.float32)},
              str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": d_in, "d_sae": d_sae,
                                               "dtype": "float32", "normalize_activations": "none",
                                               "metadata": {"hook_name": hook}}))


def write_control_vector(path, n_embd, layers, scale):
    import gguf
    import numpy as np
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_int32("controlvector.layer_count", len(layers))
    for layer in layers:
        writer.add_tensor(f"direction.{layer}",
                          (scale * np.sin(np.arange(1, n_embd + 1) * layer)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_sae_gate_and_control_vector_equal_lathe_run(tmp_path):
    """--sae and --control-vector on serve: every request runs them, and the greedy answers equal
    `lathe run` with the same flags (not the plain model's: the edits change the answer). Asked
    twice, so that the second request would reuse the first's prompt prefix if hooks allowed it."""
    write_random_sae(tmp_path / "sae", d_in=576, d_sae=64, hook="blocks.8.hook_resid_post")
    write_control_vector(tmp_path / "cv.gguf", n_embd=576, layers=[12, 13], scale=1.0)
    question = QUESTIONS[2]
    run_args = ["-m", MODEL, "--chat", "--system", "", "-p", question, "--temp", "0", "-n", "24", "-t", "1"]
    plain = run_generated(*run_args)
    cases = [["--sae", str(tmp_path / "sae"), "--sae-features", "0:40,1:40,2:-40,3:40", "--sae-clamp-everywhere"],
             ["--control-vector", str(tmp_path / "cv.gguf") + ":3"]]
    for flags in cases:
        expected = run_generated(*run_args, *flags)
        assert expected != plain, f"{flags} do not change the answer: nothing would be tested"
        with LatheServer("--parallel", "2", "-c", "1024", *flags) as s:
            c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=120)
            for _ in range(2):
                assert chat(c, question).choices[0].message.content == expected, flags


def test_sigterm_finishes_or_cancels_within_the_bound():
    s = LatheServer("--shutdown-timeout", "1").__enter__()
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=60)
    result = {}

    def long_one():
        try:
            result["r"] = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "Tell a long story"}],
                                                   max_tokens=900, temperature=1.0)
        except Exception as e:  # cancelled by the shutdown: an error answer, not a hang
            result["e"] = e

    t = threading.Thread(target=long_one)
    t.start()
    time.sleep(1.0)
    start = time.time()
    assert s.stop() == 0
    assert time.time() - start < 10
    t.join(20)
    assert not t.is_alive() and ("r" in result or "e" in result)
    assert "stopping" in s.log() and "stopped" in s.log()


# ---- structured output --------------------------------------------------------------------------

SCHEMAS = {
    "cat": {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "colors": {"type": "array", "items": {"type": "string", "enum": ["black", "white", "orange"]},
                   "minItems": 1, "maxItems": 3},
        "indoor": {"type": "boolean"}},
        "required": ["name", "age", "colors"], "additionalProperties": False},
    "order": {"type": "object", "$defs": {"item": {"type": "object", "properties": {
        "sku": {"type": "string", "maxLength": 8}, "qty": {"type": "integer", "minimum": 1, "maximum": 9},
        "price": {"type": "number", "exclusiveMinimum": 0, "maximum": 100}}, "required": ["sku", "qty", "price"]}},
        "properties": {"id": {"type": "integer", "minimum": 1000, "maximum": 9999},
                       "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "maxItems": 2},
                       "note": {"anyOf": [{"type": "string", "maxLength": 12}, {"type": "null"}]},
                       "status": {"const": "new"}},
        "required": ["id", "items", "status"]},
    "answer": {"type": "array", "items": {"type": ["number", "string"], "maxLength": 6}, "minItems": 2, "maxItems": 4},
}


def structured(client, schema, **kw):
    kw.setdefault("temperature", 0.9)
    kw.setdefault("max_tokens", 400)
    return client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Answer in JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}, **kw)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_output_always_validates(client, name):
    jsonschema = pytest.importorskip("jsonschema")
    for seed in range(4):
        answer = structured(client, SCHEMAS[name], seed=seed)
        assert answer.choices[0].finish_reason == "stop", answer.choices[0].message.content
        value = json.loads(answer.choices[0].message.content)
        jsonschema.validate(value, SCHEMAS[name])


def test_json_schema_property_order_and_stream(client):
    whole = structured(client, SCHEMAS["cat"], temperature=0)
    text = whole.choices[0].message.content
    assert list(json.loads(text)) [:3] == ["name", "age", "colors"]  # the schema's order
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Answer in JSON."}], temperature=0, max_tokens=400,
        response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": SCHEMAS["cat"]}},
        stream=True) if c.choices)
    assert streamed == text


def test_json_object(client):
    for seed in range(3):
        a = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Describe a dog in JSON."}],
                                           response_format={"type": "json_object"}, temperature=0.9, seed=seed,
                                           max_tokens=300)
        if a.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(a.choices[0].message.content), dict)
        else:  # cut by max_tokens: still a valid start of an object
            assert a.choices[0].message.content.lstrip().startswith("{")


def test_pydantic_schema_through_the_client(client):
    """The openai client's parse() sends a strict schema made by pydantic and parses the answer."""
    from typing import Literal, Optional

    from pydantic import BaseModel, Field

    class Pet(BaseModel):
        name: str = Field(max_length=16)
        kind: Literal["cat", "dog", "bird"]
        age: int = Field(ge=0, le=40)
        nickname: Optional[str] = Field(max_length=10)

    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    answer = parse(model="x", messages=[{"role": "user", "content": "Invent a pet."}], response_format=Pet,
                   temperature=0.7, seed=5, max_tokens=200)
    pet = answer.choices[0].message.parsed
    assert isinstance(pet, Pet) and 0 <= pet.age <= 40


def test_unsupported_schema_is_refused_naming_the_keyword(server):
    error = expect_error(server, 400, {"messages": [{"role": "user", "content": "x"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {"zip": {"type": "string", "pattern": "[0-9]+"}}}}}},
        param="response_format.json_schema.schema", code="unsupported_schema")
    assert "pattern" in error["message"] and "/properties/zip" in error["message"]
    expect_error(server, 400, {"messages": [{"role": "user", "content": "x"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object", "required": "a"}}}},
        param="response_format.json_schema.schema", code="invalid_schema")
