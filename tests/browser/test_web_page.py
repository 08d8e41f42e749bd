"""The web page in a real headless Chromium, against the real `codeinterp serve`.

A scripted model replays four replies: read the uploaded CSV with pandas, print a summary and
plot it; answer; write result.txt into the workspace; answer. The test works the page as a
person would (upload control, message box, Enter, the files panel's download link) and checks
what the page shows: highlighted code, streamed outputs, an inline PNG that really decodes,
HTML outputs only inside a script-less sandboxed iframe, the file downloaded through the page.

The browser is Debian's Chromium (`apt-get install chromium`; .ci/run does it). Playwright
drives it; `playwright install` is never run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TOKEN = "browser-test-token"
# `python -m codeinterp` once the package has a __main__; until then its cli module.
CODEINTERP = [
    sys.executable,
    "-m",
    "codeinterp" if importlib.util.find_spec("codeinterp.__main__") else "codeinterp.cli",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="the browser test needs Debian's Chromium at /usr/bin/chromium: "
        "apt-get install chromium (.ci/run installs it)",
    ),
]

CSV = "month,revenue,costs\n1,120,80\n2,135,90\n3,150,95\n4,160,100\n5,172,104\n6,190,110\n"
TOTAL = 120 + 135 + 150 + 160 + 172 + 190  # 927

ANALYSIS = """\
I will load the file, summarise it and plot the revenue.

```python
import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv("sales.csv")  # the uploaded file
print(f"rows: {len(df)}, total revenue: {df['revenue'].sum()}")
print(f"mean costs: {df['costs'].mean():.1f}")
plt.plot(df["month"], df["revenue"], marker="o", label='revenue')
plt.title("Revenue by month")
plt.legend()
plt.show()
df.head(3)
```
"""
ANSWER = "The data covers **6 months**; revenue grows every month, from 120 to 190."
SAVE = """\
Saving the total.

```python
with open("result.txt", "w") as f:
    f.write(f"total revenue = {df['revenue'].sum()}\\n")
print("saved result.txt")
```
"""
SAVED = "I wrote `result.txt` into the workspace."
SLEEP = """\
Waiting, as asked.

```python
import time
print("sleeping", flush=True)
time.sleep(120)
```
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """`codeinterp serve` with a scripted model replaying `request.param` (a list of replies)."""
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps(request.param))
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                *CODEINTERP,
                "serve",
                "--port",
                str(port),
                "--token",
                TOKEN,
                "--model",
                f"scripted:{replies}",
                "--db",
                str(tmp_path / "codeinterp.db"),
                "--data-dir",
                str(tmp_path / "data"),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
    running = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"codeinterp serve exited with {process.returncode}:\n{running.output()}"
                )
            try:
                request = urllib.request.Request(
                    f"{running.url}/api/info", headers={"Authorization": f"Bearer {TOKEN}"}
                )
                with urllib.request.urlopen(request, timeout=5) as reply:
                    if reply.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"codeinterp serve did not answer within 90 s:\n{running.output()}")
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(
    browser: Browser, server: Server, problems: list[str], *, console_errors: bool = True
) -> tuple[BrowserContext, Page]:
    """A fresh context and page that note page errors, console errors (if asked) and any
    request leaving the service: nothing may load from anywhere else."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    if console_errors:
        page.on(
            "console",
            lambda message: (
                problems.append(f"console {message.type}: {message.text}")
                if message.type == "error"
                else None
            ),
        )
    local = (server.url, "data:", "blob:", "about:")
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith(local) else problems.append(f"request to {request.url}")
        ),
    )
    return context, page


@pytest.mark.parametrize(
    "server", [[ANALYSIS, ANSWER, SAVE, SAVED, SLEEP]], ids=["analysis"], indirect=True
)
def test_chat_upload_plot_and_download_in_chromium(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    data = tmp_path / "sales.csv"
    data.write_text(CSV)
    problems: list[str] = []
    context, page = open_page(browser, server, problems)

    # The token comes in the fragment, is kept, and leaves the address bar.
    page.goto(f"{server.url}/#token={TOKEN}")
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    assert TOKEN not in page.url
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#info")).to_contain_text("scripted")
    expect(page.locator("#info")).to_contain_text("executor")

    # A conversation, then the CSV through the page's upload control.
    page.get_by_role("button", name="New", exact=True).click()
    expect(page.locator("#conversation-list .conversation")).to_have_count(1)
    expect(page.locator("#conversation-list [aria-current=true]")).to_have_count(1)
    page.locator("#upload").set_input_files(str(data))
    expect(page.locator("#file-list")).to_contain_text("sales.csv")

    # The first request: code (highlighted), its printed summary, the plot.
    prompt = page.get_by_role("textbox", name="Message")
    prompt.fill("Summarise sales.csv and plot the revenue by month.")
    prompt.press("Enter")
    messages = page.locator("#messages")
    expect(messages.locator(".msg.user")).to_contain_text("Summarise sales.csv")
    code = messages.locator(".cell pre.code code").first
    expect(code).to_contain_text('pd.read_csv("sales.csv")')
    expect(code.locator(".tok-kw", has_text="import").first).to_be_visible()
    expect(code.locator(".tok-str", has_text='"sales.csv"').first).to_be_visible()
    expect(code.locator(".tok-com", has_text="# the uploaded file")).to_be_visible()
    expect(code.locator(".tok-num", has_text="3").first).to_be_visible()
    expect(messages.locator("pre.stdout").first).to_contain_text(f"rows: 6, total revenue: {TOTAL}")
    expect(messages.locator("pre.stdout").first).to_contain_text("mean costs: 96.5")
    plot = messages.locator("img.plot").first
    expect(plot).to_be_visible()
    assert plot.get_attribute("src").startswith("data:image/png;base64,")
    page.wait_for_function(
        "() => { const img = document.querySelector('#messages img.plot');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    # The prose of the answer, with its markdown.
    turn = messages.locator(".msg.assistant").first
    expect(turn).to_have_attribute("aria-busy", "false")
    expect(turn.locator("strong", has_text="6 months")).to_be_visible()
    expect(turn.locator(".prose").first).to_contain_text("I will load the file")
    assert "```" not in turn.inner_text()

    # The second request writes result.txt.
    prompt.fill("Save the total revenue to result.txt.")
    page.get_by_role("button", name="Send").click()
    second = messages.locator(".msg.assistant").nth(1)
    expect(second.locator("pre.stdout")).to_contain_text("saved result.txt")
    expect(second).to_have_attribute("aria-busy", "false")
    expect(second.locator("code", has_text="result.txt").last).to_be_visible()

    # The files panel lists it; downloading through the page yields its content.
    link = page.locator("#file-list a", has_text="result.txt")
    expect(link).to_be_visible()
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == "result.txt"
    saved = tmp_path / "downloaded-result.txt"
    download.save_as(saved)
    assert saved.read_text() == f"total revenue = {TOTAL}\n"

    # HTML outputs (the DataFrame) only inside sandboxed iframes without scripts.
    assert_html_only_in_sandboxes(page)
    page.screenshot(path=str(tmp_path / "web-page.png"))
    messages.evaluate("box => { box.scrollTop = 0; }")
    page.screenshot(path=str(tmp_path / "web-page-top.png"))

    # A long cell: Interrupt stops it; Reset (once confirmed) restarts the session.
    page.on("dialog", lambda dialog: dialog.accept())
    prompt.fill("Wait for two minutes.")
    prompt.press("Enter")
    third = messages.locator(".msg.assistant").nth(2)
    expect(third.locator("pre.stdout")).to_contain_text("sleeping")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    page.get_by_role("button", name="Interrupt").click()
    expect(third.locator(".note", has_text="Interrupted")).to_be_visible(timeout=20_000)
    expect(third).to_have_attribute("aria-busy", "false")
    expect(third.locator(".cell-state")).to_contain_text("KeyboardInterrupt")
    expect(page.get_by_role("button", name="Interrupt")).to_be_disabled()
    page.get_by_role("button", name="Reset").click()
    expect(messages.locator(".note", has_text="Session reset")).to_be_visible()

    # The history comes back from the service after a reload.
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    expect(messages.locator(".msg.user")).to_have_count(3)
    expect(messages.locator(".msg.assistant")).to_have_count(3)
    expect(messages.locator(".note", has_text="Session reset")).to_be_visible()
    expect(messages.locator(".note", has_text="Interrupted")).to_be_visible()
    expect(messages.locator("pre.stdout").first).to_contain_text(f"total revenue: {TOTAL}")
    page.wait_for_function(
        "() => { const img = document.querySelector('#messages img.plot');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    assert_html_only_in_sandboxes(page)
    page.screenshot(path=str(tmp_path / "web-page-reloaded.png"))

    # Without a token in the address, the page asks for one (and says when it is wrong).
    fresh = context.new_page()
    fresh.goto(f"{server.url}/")
    expect(fresh.locator("#login")).to_be_visible()
    expect(fresh.locator("#app")).to_be_hidden()
    fresh.get_by_role("textbox", name="Token").fill("not-the-token")
    fresh.get_by_role("textbox", name="Token").press("Enter")
    expect(fresh.locator("#login-error")).to_contain_text("did not accept")
    fresh.get_by_role("textbox", name="Token").fill(TOKEN)
    fresh.get_by_role("button", name="Continue").click()
    expect(fresh.locator("#conversation-list .conversation")).to_have_count(1)
    expect(fresh.locator("#messages .msg.user")).to_have_count(3)
    assert not problems, "\n".join(problems) + f"\n--- server log ---\n{server.output()}"


# Markup everywhere a model or its code can put text. Each payload, if it ever ran, would set
# window.__pwned (or the parent's, from a frame).
HOSTILE = """\
See <img src=x onerror="window.__pwned='prose-img'"> and <script>window.__pwned='prose'</script>
**still markdown** and `<b>code span</b>`.

```python
class Page:
    def _repr_html_(self):
        return (
            "<table><tr><td>framed cell</td></tr></table>"
            "<script>parent.__pwned = 'frame'</script>"
            "<img src=x onerror=\\"parent.__pwned = 'frame-img'\\">"
        )

import sys
print("<b>not bold</b>")
print("<script>window.__pwned = 'stderr'</script>", file=sys.stderr)
raise_it = "</code></pre><img src=x onerror=\\"window.__pwned = 'code'\\">"
Page()
```
"""
HOSTILE_ANSWER = "Done <iframe src=\"javascript:parent.__pwned='answer'\"></iframe>"


@pytest.mark.parametrize("server", [[HOSTILE, HOSTILE_ANSWER]], ids=["hostile"], indirect=True)
def test_model_and_code_markup_is_shown_as_text(server: Server, browser: Browser) -> None:
    problems: list[str] = []
    # The sandbox and the frame's policy block the frame's script and image, and Chromium
    # reports each block as a console error: expected here.
    context, page = open_page(browser, server, problems, console_errors=False)
    page.goto(f"{server.url}/#token={TOKEN}")
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    page.get_by_role("button", name="New", exact=True).click()
    prompt = page.get_by_role("textbox", name="Message")
    prompt.fill("<img src=x onerror=\"window.__pwned='user'\"> hello")
    prompt.press("Enter")
    messages = page.locator("#messages")
    turn = messages.locator(".msg.assistant")
    expect(turn).to_have_attribute("aria-busy", "false")
    expect(turn).to_contain_text("Done <iframe")

    expect(messages.locator(".msg.user")).to_contain_text("<img src=x")
    expect(turn.locator(".prose").first).to_contain_text("<script>window.__pwned='prose'</script>")
    expect(turn.locator("strong")).to_have_text("still markdown")
    expect(turn.locator(".prose code").first).to_have_text("<b>code span</b>")
    expect(turn.locator(".cell code")).to_contain_text("</code></pre><img src=x")
    expect(turn.locator("pre.stdout")).to_have_text("<b>not bold</b>\n")
    expect(turn.locator("pre.stderr")).to_contain_text("<script>window.__pwned = 'stderr'")
    expect(page.frame_locator("#messages iframe").locator("td")).to_have_text("framed cell")

    # Only the one sandboxed frame; no markup of theirs became an element of the page.
    assert messages.locator("iframe").count() == 1
    assert messages.locator("iframe").get_attribute("sandbox") == ""
    for selector in ("img", "script", "b", "table", "style"):
        assert messages.locator(selector).count() == 0, selector
    page.wait_for_timeout(500)  # give any stray handler a chance to run
    assert page.evaluate("() => window.__pwned") is None
    assert not problems, "\n".join(problems) + f"\n--- server log ---\n{server.output()}"
    context.close()


def assert_html_only_in_sandboxes(page: Page) -> None:
    frames = page.locator("#messages iframe")
    for i in range(frames.count()):
        frame = frames.nth(i)
        sandbox = frame.get_attribute("sandbox")
        assert sandbox is not None, "an HTML output's iframe has no sandbox"
        assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox, sandbox
    # The DataFrame's HTML table is in a sandboxed iframe, never in the page itself.
    assert frames.count() >= 1, "the DataFrame's text/html output was not rendered"
    srcdoc = frames.first.get_attribute("srcdoc") or ""
    assert re.search(r"<table", srcdoc), srcdoc[:300]
    assert page.locator("table").count() == 0, "HTML output rendered into the page itself"
    assert page.locator("#messages style, #messages script").count() == 0
