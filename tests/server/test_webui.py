"""The web chat page of `lathe serve` (src/server/webui/index.html), driven in headless Chromium.

The test starts the server itself and stops it at the end:

  LATHE_CLI              the lathe binary (default build/lathe in the checkout); runs
                         `LATHE_CLI serve -m MODEL --port P --parallel 2 -c 1024 -t 2 [--api-key K]`
  LATHE_TEST_MODEL       the model (default models/SmolLM2-135M-Instruct.Q4_1.gguf in the checkout)
  LATHE_WEBUI_TEST_SERVER=mock
                         use tests/server/mock_openai_server.py instead of lathe (no model needed)
  LATHE_TEST_ARTIFACTS   where the screenshot goes (else LATHE_TEST_BINARY_DIR, else /tmp)
  CHROME_BIN, CHROMEDRIVER
                         the browser and its driver (default: chromium and chromedriver on PATH,
                         Debian's packages chromium and chromium-driver)

It skips (with the reason) when Selenium, Chromium or chromedriver are missing, never when the server
fails: a server that exits or does not answer /health in time is a failure.

    .venv/bin/python -m pytest -q tests/server/test_webui.py
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODE = os.environ.get("LATHE_WEBUI_TEST_SERVER", "lathe").strip().lower() or "lathe"
LATHE_CLI = os.environ.get("LATHE_CLI") or str(ROOT / "build" / "lathe")  # ctest sets both
MODEL = os.environ.get("LATHE_TEST_MODEL") or str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
STARTUP_TIMEOUT = float(os.environ.get("LATHE_WEBUI_STARTUP_TIMEOUT", "60"))
ANSWER_TIMEOUT = 120.0   # one answer on a slow CPU machine
API_KEY = "secret"


# ---- the server --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if MODE == "mock":
            cmd = [sys.executable, str(HERE / "mock_openai_server.py"), "--port", str(self.port)]
        else:
            cmd = [LATHE_CLI, "serve", "-m", MODEL, "--port", str(self.port),
                   "--parallel", "2", "-c", "1024", "-t", "2"]
        if api_key:
            cmd += ["--api-key", api_key]
        self.cmd = cmd
        self.log = tempfile.TemporaryFile()
        self.proc: subprocess.Popen | None = None

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-6000:]

    def start(self) -> None:
        if MODE != "mock" and not os.access(LATHE_CLI, os.X_OK):
            pytest.fail(f"LATHE_CLI {LATHE_CLI} is not an executable (build lathe first)")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode} before answering /health\n"
                            f"command: {' '.join(self.cmd)}\noutput:\n{self.output()}")
            try:
                status, _ = self.get("/health", timeout=2)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"server did not answer /health with 200 within {STARTUP_TIMEOUT:.0f} s "
                    f"(last: {last})\ncommand: {' '.join(self.cmd)}\noutput:\n{self.output()}")

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path)
        if self.api_key:
            req.add_header("Authorization", "Bearer " + self.api_key)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server():
    s = Server()
    try:
        s.start()
        yield s
        assert s.alive(), f"server died during the tests\noutput:\n{s.output()}"
    finally:
        s.stop()


@pytest.fixture(scope="module")
def key_server():
    s = Server(api_key=API_KEY)
    try:
        s.start()
        yield s
        assert s.alive(), f"server died during the tests\noutput:\n{s.output()}"
    finally:
        s.stop()


# ---- the browser -------------------------------------------------------------------------------

def find_binary(env: str, names: list[str], extra: list[str]) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if os.access(os.environ[env], os.X_OK) else None
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return next((p for p in extra if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def driver():
    chrome = find_binary("CHROME_BIN", ["chromium", "chromium-browser", "google-chrome"],
                         ["/usr/lib/chromium/chromium"])
    chromedriver = find_binary("CHROMEDRIVER", ["chromedriver"], ["/usr/lib/chromium/chromedriver"])
    if not chrome:
        pytest.skip("Chromium is not installed (apt-get install chromium, or set CHROME_BIN)")
    if not chromedriver:
        pytest.skip("chromedriver is not installed (apt-get install chromium-driver, or set CHROMEDRIVER)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    opts = Options()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,900", "--no-first-run", "--no-default-browser-check"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    d.set_script_timeout(30)
    try:
        yield d
    finally:
        d.quit()


# ---- page helpers ------------------------------------------------------------------------------

def by_id(d, id_: str):
    return d.find_element(By.ID, id_)


def state(d) -> str:
    return d.execute_script("return document.body.dataset.state")


def open_page(d, srv: Server) -> None:
    d.get(srv.url + "/")
    WebDriverWait(d, 20).until(lambda d: by_id(d, "model-name").text.strip() not in ("", "loading model…"))
    assert state(d) == "idle"
    # Record every chat request the page makes and every length the last answer goes through.
    d.execute_script("""
        window.__bodies = [];
        const realFetch = window.fetch;
        window.fetch = function (url, opts) {
            if (String(url).includes('/v1/chat/completions') && opts && opts.body)
                window.__bodies.push(JSON.parse(opts.body));
            return realFetch.apply(this, arguments);
        };
        window.__lengths = [];
        new MutationObserver(() => {
            const all = document.querySelectorAll('#messages .message.assistant .content');
            if (!all.length) return;
            const n = all[all.length - 1].textContent.length;
            if (window.__lengths[window.__lengths.length - 1] !== n) window.__lengths.push(n);
        }).observe(document.getElementById('messages'),
                   {subtree: true, childList: true, characterData: true});
    """)


def open_settings(d) -> None:
    if not by_id(d, "settings").is_displayed():
        by_id(d, "settings-toggle").click()
        WebDriverWait(d, 5).until(lambda d: by_id(d, "settings").is_displayed())


def set_field(d, id_: str, value: str) -> None:
    open_settings(d)
    el = by_id(d, id_)
    el.clear()
    if value:
        el.send_keys(value)
    assert el.get_attribute("value") == value


def assistant_texts(d) -> list[str]:
    return d.execute_script(
        "return [...document.querySelectorAll('#messages .message.assistant .content')]"
        ".map(e => e.textContent)")


def n_messages(d, role: str) -> int:
    return len(d.find_elements(By.CSS_SELECTOR, f"#messages .message.{role}"))


def wait_idle(d, timeout: float = ANSWER_TIMEOUT) -> None:
    try:
        WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda d: state(d) == "idle")
    except TimeoutException:
        pytest.fail(f"the page did not return to idle within {timeout:.0f} s; "
                    f"error: {by_id(d, 'error').text!r}, answers: {assistant_texts(d)!r}")


def send(d, text: str) -> None:
    prompt = by_id(d, "prompt")
    prompt.send_keys(text)
    prompt.send_keys(Keys.ENTER)


def ask(d, text: str) -> str:
    """Sends a message, waits for the whole answer and returns it."""
    before = n_messages(d, "assistant")
    send(d, text)
    wait_idle(d)
    err = by_id(d, "error")
    assert not err.is_displayed(), f"the page shows an error: {err.text!r}"
    assert n_messages(d, "assistant") == before + 1
    return assistant_texts(d)[-1]


def cancelled_count(srv: Server) -> int | None:
    """How many generations the server cancelled: the mock's /mock/stats, lathe's /metrics
    (lathe_requests_total{outcome="cancelled"}); None when the server does not tell."""
    if MODE == "mock":
        return json.loads(srv.get("/mock/stats")[1])["cancelled"]
    status, text = srv.get("/metrics")
    if status != 200:
        return None
    for line in text.decode(errors="replace").splitlines():
        if line.startswith('lathe_requests_total{outcome="cancelled"}'):
            return int(float(line.split()[-1]))
    return None


def artifact_dir() -> Path:
    p = Path(os.environ.get("LATHE_TEST_ARTIFACTS") or os.environ.get("LATHE_TEST_BINARY_DIR")
             or tempfile.gettempdir())
    p.mkdir(parents=True, exist_ok=True)
    return p


# ---- the cases ---------------------------------------------------------------------------------

def test_page_loads_with_model_name(driver, server):
    status, _ = server.get("/")
    assert status == 200
    with urllib.request.urlopen(server.url + "/", timeout=10) as r:
        assert r.headers.get_content_type() == "text/html"
    open_page(driver, server)
    status, body = server.get("/v1/models")
    assert status == 200
    model = json.loads(body)["data"][0]["id"]
    assert by_id(driver, "model-name").text == model
    assert driver.title
    for id_ in ("prompt", "send", "messages", "new-chat", "settings-toggle"):
        assert by_id(driver, id_).is_displayed(), id_
    assert not by_id(driver, "stop").is_displayed()
    assert not by_id(driver, "error").is_displayed()
    # The page loads nothing from elsewhere (it has to work without internet).
    external = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(u => !u.startsWith(location.origin))")
    assert external == []


def test_streamed_answer(driver, server):
    open_page(driver, server)
    set_field(driver, "settings-temperature", "0")
    set_field(driver, "settings-max-tokens", "48")
    send(driver, "Write three sentences about the sea.")
    assert n_messages(driver, "user") == 1
    wait_idle(driver)
    assert not by_id(driver, "error").is_displayed(), by_id(driver, "error").text
    texts = assistant_texts(driver)
    assert len(texts) == 1 and texts[0].strip(), texts
    lengths = driver.execute_script("return window.__lengths")
    partial = sorted({n for n in lengths if 0 < n < len(texts[0])})
    assert len(partial) >= 2, f"the answer did not grow in steps (lengths seen: {lengths})"
    assert lengths[-1] == len(texts[0])
    assert "\ufffd" not in texts[0]  # UTF-8 split across reads is put back together
    if MODE == "mock":  # its events come in pieces and end with non-ASCII words
        assert texts[0].endswith("caf\u00e9 workshop near the sea \u2014 \u65e5\u672c"), texts[0]
    msg = driver.find_element(By.CSS_SELECTOR, "#messages .message.assistant")
    assert msg.get_attribute("data-finish-reason") in ("stop", "length")
    assert msg.get_attribute("data-stopped") is None
    assert not by_id(driver, "stop").is_displayed()
    assert by_id(driver, "send").is_enabled()
    req = driver.execute_script("return window.__bodies")[-1]
    assert req["stream"] is True and req["max_tokens"] == 48 and req["temperature"] == 0
    assert req["stream_options"] == {"include_usage": True}
    status_text = msg.find_element(By.CSS_SELECTOR, ".status").text
    assert " tokens" in status_text, status_text  # the usage chunk's count is shown
    # The copy button puts the answer on the clipboard (or says it could not).
    msg.find_element(By.CSS_SELECTOR, ".copy").click()
    WebDriverWait(driver, 5).until(
        lambda d: msg.find_element(By.CSS_SELECTOR, ".copy").text in ("Copied", "Copy failed"))
    shot = artifact_dir() / f"lathe_webui_{MODE}.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 0
    print(f"\nwebui screenshot: {shot}", flush=True)


def test_multi_turn_sends_the_whole_conversation(driver, server):
    open_page(driver, server)
    set_field(driver, "settings-system", "You are a helpful assistant.")
    set_field(driver, "settings-temperature", "0")
    set_field(driver, "settings-max-tokens", "24")
    first = ask(driver, "My name is Ada. Say hello to me.")
    second = ask(driver, "What is my name?")
    assert second.strip()
    bodies = driver.execute_script("return window.__bodies")
    assert len(bodies) == 2
    assert [m["role"] for m in bodies[0]["messages"]] == ["system", "user"]
    msgs = bodies[1]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"] == "You are a helpful assistant."
    assert msgs[1]["content"] == "My name is Ada. Say hello to me."
    assert msgs[2]["content"] == first
    assert msgs[3]["content"] == "What is my name?"
    if MODE == "mock":  # the mock also tells what it received
        assert "This conversation has 4 messages." in second
    assert n_messages(driver, "user") == 2 and n_messages(driver, "assistant") == 2
    # Shift+Enter is a new line, not a send.
    prompt = by_id(driver, "prompt")
    prompt.send_keys("line one")
    prompt.send_keys(Keys.SHIFT, Keys.ENTER)
    prompt.send_keys("line two")
    assert prompt.get_attribute("value") == "line one\nline two"
    assert state(driver) == "idle" and len(driver.execute_script("return window.__bodies")) == 2
    # New chat clears the conversation.
    by_id(driver, "new-chat").click()
    assert n_messages(driver, "user") == 0 and n_messages(driver, "assistant") == 0
    assert by_id(driver, "prompt").get_attribute("value") == ""


def test_stop_keeps_the_partial_answer(driver, server):
    open_page(driver, server)
    set_field(driver, "settings-temperature", "1")
    set_field(driver, "settings-max-tokens", "400")
    cancelled_before = cancelled_count(server)
    for attempt in range(3):  # a sampled answer may end by itself before Stop is clicked
        by_id(driver, "new-chat").click()
        send(driver, "Tell me a long story about a dragon who learns to cook.")
        WebDriverWait(driver, ANSWER_TIMEOUT, poll_frequency=0.05).until(
            lambda d: state(d) == "idle" or any(t.strip() for t in assistant_texts(d)))
        if state(driver) == "idle":
            continue
        assert by_id(driver, "stop").is_displayed()
        by_id(driver, "stop").click()
        clicked = time.monotonic()
        wait_idle(driver, timeout=5)
        assert time.monotonic() - clicked < 5
        msg = driver.find_element(By.CSS_SELECTOR, "#messages .message.assistant")
        if msg.get_attribute("data-stopped") != "true" and msg.get_attribute("data-finish-reason"):
            continue  # it finished on its own between the check and the click
        assert msg.get_attribute("data-stopped") == "true"
        assert "stopped" in msg.find_element(By.CSS_SELECTOR, ".status").text
        partial = assistant_texts(driver)[-1]
        assert partial.strip()
        time.sleep(0.5)  # nothing more arrives after Stop
        assert assistant_texts(driver)[-1] == partial
        assert not by_id(driver, "error").is_displayed(), by_id(driver, "error").text
        assert not by_id(driver, "stop").is_displayed()
        break
    else:
        pytest.fail("the answer ended by itself three times before Stop could be clicked")
    # Closing the connection made the server cancel the generation (when it tells).
    if cancelled_before is not None:
        try:
            WebDriverWait(driver, 5, poll_frequency=0.1).until(
                lambda _: cancelled_count(server) > cancelled_before)
        except TimeoutException:
            pytest.fail(f"the server did not count a cancelled generation after Stop "
                        f"({cancelled_before} -> {cancelled_count(server)})\noutput:\n{server.output()}")
    # The server is still fine, and the conversation goes on with the partial answer in it.
    assert server.get("/health")[0] == 200
    set_field(driver, "settings-max-tokens", "16")
    ask(driver, "Thanks.")
    msgs = driver.execute_script("return window.__bodies")[-1]["messages"]
    assert [m["role"] for m in msgs][-3:] == ["user", "assistant", "user"]
    assert msgs[-2]["content"] == partial
    # "New chat" while an answer streams stops it and starts over with an empty conversation.
    set_field(driver, "settings-max-tokens", "400")
    send(driver, "Tell me a long story about a cat.")
    WebDriverWait(driver, ANSWER_TIMEOUT, poll_frequency=0.05).until(
        lambda d: state(d) == "idle" or len(assistant_texts(d)) == 3 and assistant_texts(d)[-1].strip())
    by_id(driver, "new-chat").click()
    wait_idle(driver, timeout=5)
    assert n_messages(driver, "user") == 0 and n_messages(driver, "assistant") == 0
    set_field(driver, "settings-max-tokens", "8")
    ask(driver, "Hi")
    assert [m["role"] for m in driver.execute_script("return window.__bodies")[-1]["messages"]] \
        == ["system", "user"]


@pytest.mark.parametrize("field,value", [("settings-temperature", "5"),
                                         ("settings-max-tokens", "-1")])
def test_server_error_is_shown(driver, server, field, value):
    open_page(driver, server)
    set_field(driver, field, value)
    send(driver, "Hello there")
    wait_idle(driver, timeout=30)
    err = by_id(driver, "error")
    assert err.is_displayed(), "no error shown"
    assert err.text.startswith("Error 400: ") and len(err.text) > len("Error 400: "), err.text
    # The failed turn is taken back: no answer, the text is back in the box to fix and resend.
    assert n_messages(driver, "assistant") == 0 and n_messages(driver, "user") == 0
    assert by_id(driver, "prompt").get_attribute("value") == "Hello there"
    body = driver.execute_script("return window.__bodies")[-1]
    assert str(body[{"settings-temperature": "temperature", "settings-max-tokens": "max_tokens"}[field]]) \
        in (value, value + ".0")
    # After fixing the setting the same text goes through.
    set_field(driver, field, {"settings-temperature": "0", "settings-max-tokens": "8"}[field])
    by_id(driver, "prompt").send_keys(Keys.ENTER)
    wait_idle(driver)
    assert not err.is_displayed()
    assert n_messages(driver, "assistant") == 1


def test_api_key(driver, key_server):
    open_page(driver, key_server)
    status, models = key_server.get("/v1/models")
    assert status == 200
    model = json.loads(models)["data"][0]["id"]
    # Without the key the page shows the model name only if the server lists models without one.
    assert by_id(driver, "model-name").text in ("model hidden (API key needed)", model)
    set_field(driver, "settings-max-tokens", "8")
    set_field(driver, "settings-api-key", "")
    send(driver, "Hello")
    wait_idle(driver, timeout=30)
    err = by_id(driver, "error")
    assert err.is_displayed() and err.text.startswith("Error 401: "), err.text
    assert n_messages(driver, "assistant") == 0
    body = driver.execute_script("return window.__bodies")
    assert len(body) == 1
    # A wrong key is refused too.
    set_field(driver, "settings-api-key", "wrong")
    by_id(driver, "settings-remember").click()  # remember it (checks localStorage below)
    by_id(driver, "prompt").send_keys(Keys.ENTER)
    wait_idle(driver, timeout=30)
    assert err.is_displayed() and err.text.startswith("Error 401: "), err.text
    # With the key it answers, and the model name appears.
    set_field(driver, "settings-api-key", API_KEY)
    by_id(driver, "prompt").click()  # blur the key field: its change event reloads the model name
    WebDriverWait(driver, 10).until(lambda d: by_id(d, "model-name").text == model)
    by_id(driver, "prompt").send_keys(Keys.ENTER)
    wait_idle(driver)
    assert not err.is_displayed(), err.text
    assert n_messages(driver, "assistant") == 1 and assistant_texts(driver)[0].strip()
    # "Remember" keeps the key in localStorage for the next visit; unticking forgets it.
    assert driver.execute_script("return localStorage.getItem('lathe.apiKey')") == API_KEY
    driver.refresh()
    WebDriverWait(driver, 10).until(lambda d: by_id(d, "settings-api-key").get_attribute("value") == API_KEY)
    open_settings(driver)
    by_id(driver, "settings-remember").click()
    assert driver.execute_script("return localStorage.getItem('lathe.apiKey')") is None
