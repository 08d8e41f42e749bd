"""The `hf` backend on a tiny chat model built here: a byte-level BPE tokenizer trained on a few
lines (chat markers, Python, English) with a ChatML template, and a random 2-layer Llama saved
beside it. Nothing is downloaded. The model's text is random; what is checked is the contract:
streaming, usage, limits, stop strings, errors that name their fix, and no hung threads.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from codeinterp.agent import Finished, Interpreter  # noqa: E402
from codeinterp.errors import ConfigError  # noqa: E402
from codeinterp.executors import get_executor  # noqa: E402
from codeinterp.models import get_model  # noqa: E402
from codeinterp.models.base import Delta, Message, Model  # noqa: E402
from codeinterp.models.transformers import StopCutter, TransformersModel  # noqa: E402

pytestmark = pytest.mark.slow  # importing torch and transformers takes seconds

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
NO_SYSTEM_ROLE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}" + CHATML
)
CORPUS = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    "<|im_start|>user\nWhat is the sum of the squares of 1 to 100?<|im_end|>\n",
    "<|im_start|>assistant\n```python\nprint(sum(i * i for i in range(1, 101)))\n```<|im_end|>\n",
    "The quick brown fox jumps over the lazy dog. def f(x): return x + 1",
    "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})\nprint(df.describe())",
]
MESSAGES = [
    Message(role="system", content="You are a helpful assistant."),
    Message(role="user", content="What is the sum of the squares of 1 to 100?"),
]
GENERATE_THREAD = "codeinterp-hf-generate"


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|im_end|>", "<|im_start|>", "<|endoftext|>"],  # EOS is id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    return fast


def build_model(folder: Path, *, eos_first: bool = False) -> Path:
    """A tiny chat model in `folder`. Its head never prefers EOS (so it writes until its limit),
    or with `eos_first`, always does (so every reply is empty)."""
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        if eos_first:
            model.lm_head.weight.zero_()  # every logit 0: greedy picks id 0, the EOS
        else:
            model.lm_head.weight[tokenizer.eos_token_id].zero_()  # below the random maximum
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="module")
def model(folder: Path) -> Iterator[Model]:
    loaded = get_model(f"hf:{folder}")
    yield loaded
    loaded.close()


def deltas(model: Model, **options: Any) -> list[Delta]:
    return list(model.stream(MESSAGES, **options))


def text_of(replies: list[Delta]) -> str:
    return "".join(d.text for d in replies)


def generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == GENERATE_THREAD]


# -- streaming ---------------------------------------------------------------------------
def test_get_model_loads_a_local_folder(model: Model, folder: Path) -> None:
    assert isinstance(model, TransformersModel)
    assert model.name == f"hf:{folder}"
    assert not model.supports_tools and not model.supports_grammar


def test_stream_yields_text_then_one_final_delta_with_usage(model: Model, folder: Path) -> None:
    replies = deltas(model, max_tokens=12)
    *pieces, last = replies
    assert pieces and all(d.text and d.usage is None and d.finish_reason is None for d in pieces)
    assert last.text == "" and last.finish_reason in ("stop", "length")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    chat = [{"role": m.role, "content": m.content} for m in MESSAGES]
    templated = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    assert last.usage is not None
    assert last.usage.prompt_tokens == len(templated["input_ids"])
    assert 0 < last.usage.completion_tokens <= 12
    assert not generate_threads()


def test_max_tokens_bounds_the_reply_and_finishes_with_length(model: Model) -> None:
    last = deltas(model, max_tokens=3)[-1]
    assert last.usage is not None and last.usage.completion_tokens == 3
    assert last.finish_reason == "length"
    assert deltas(model, max_tokens=9)[-1].usage.completion_tokens == 9  # type: ignore[union-attr]


def test_default_max_tokens_is_the_models(folder: Path) -> None:
    short = TransformersModel(str(folder), max_tokens=4)
    last = list(short.stream(MESSAGES))[-1]
    assert last.usage is not None and last.usage.completion_tokens == 4


def test_end_of_turn_token_finishes_with_stop(tmp_path: Path) -> None:
    silent = TransformersModel(str(build_model(tmp_path, eos_first=True)))
    replies = list(silent.stream(MESSAGES, max_tokens=10))
    assert text_of(replies) == ""
    assert replies[-1].finish_reason == "stop"
    assert replies[-1].usage is not None and replies[-1].usage.completion_tokens == 1


def test_temperature_zero_is_deterministic(model: Model) -> None:
    first = text_of(deltas(model, max_tokens=16, temperature=0.0))
    assert first and first == text_of(deltas(model, max_tokens=16, temperature=0.0))


def test_sampling_at_a_temperature_runs(model: Model) -> None:
    torch.manual_seed(1)
    last = deltas(model, max_tokens=8, temperature=0.8, top_p=0.9)[-1]
    assert last.usage is not None and 0 < last.usage.completion_tokens <= 8


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_warnings() -> Iterator[list[str]]:
    """What transformers warns (through its own handler, which pytest's capture misses)."""
    recorder = Recorder()
    library = logging.getLogger("transformers")
    library.addHandler(recorder)
    yield recorder.messages
    library.removeHandler(recorder)


def test_greedy_overrides_an_instruct_models_sampling_defaults(
    tmp_path: Path, transformers_warnings: list[str]
) -> None:
    folder = build_model(tmp_path)
    settings = json.loads((folder / "generation_config.json").read_text())
    settings.update(do_sample=True, temperature=0.7, top_p=0.8, top_k=20)  # as Qwen's
    (folder / "generation_config.json").write_text(json.dumps(settings))
    instruct = TransformersModel(str(folder))
    first = text_of(list(instruct.stream(MESSAGES, max_tokens=16)))
    assert first == text_of(list(instruct.stream(MESSAGES, max_tokens=16)))
    assert not [m for m in transformers_warnings if "generation flags" in m]


# -- stop strings ------------------------------------------------------------------------
def stop_inside(text: str) -> str:
    """Two characters from the middle of `text`."""
    middle = len(text) // 2
    return text[middle : middle + 2]


def test_stop_string_cuts_the_text_and_stops_generation(model: Model) -> None:
    full = text_of(deltas(model, max_tokens=30))
    assert len(full) >= 4
    stop = stop_inside(full)
    replies = deltas(model, max_tokens=30, stop=[stop])
    assert text_of(replies) == full[: full.find(stop)]
    assert replies[-1].finish_reason == "stop"
    assert replies[-1].usage is not None and replies[-1].usage.completion_tokens < 30
    assert not generate_threads()


class CharStreamer(transformers.TextIteratorStreamer):  # type: ignore[misc,name-defined]
    """Hands on its text one character at a time: every stop string spans chunks."""

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        for char in text:
            super().on_finalized_text(char, stream_end=False)
        if stream_end:
            super().on_finalized_text("", stream_end=True)


def test_stop_string_split_across_chunks_still_cuts(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = text_of(deltas(model, max_tokens=30))
    stop = stop_inside(full)
    # The module the backend holds: transformers 5 may put a new module object in sys.modules
    # once a model is built, so patching `transformers` here could miss it.
    backend = model._transformers  # type: ignore[attr-defined]
    monkeypatch.setattr(backend, "TextIteratorStreamer", CharStreamer)
    pieces = deltas(model, max_tokens=30)[:-1]
    assert len(pieces) == len(full)  # one delta per character
    cut = deltas(model, max_tokens=30, stop=[stop, "never written"])
    assert text_of(cut) == full[: full.find(stop)]


def test_stop_cutter_holds_back_a_possible_stop_string() -> None:
    cutter = StopCutter(["```\n", "STOP"])
    assert cutter.feed("print(1)\n`") == "print(1)\n"
    assert cutter.feed("`") == ""
    assert cutter.feed("x") == "``x"  # not a stop string after all
    assert cutter.feed("ST") == ""
    assert cutter.feed("OP and more") == "" and cutter.stopped
    assert cutter.feed("later") == "" and cutter.flush() == ""
    unfinished = StopCutter(["STOP"])
    assert unfinished.feed("the end ST") == "the end " and unfinished.flush() == "ST"
    assert StopCutter(None).feed("all of it") == "all of it"
    assert StopCutter(["ab"]).feed("xxabyyab") == "xx"


# -- closing and failing -----------------------------------------------------------------
def test_closing_the_stream_early_stops_generation(model: Model) -> None:
    stream = model.stream(MESSAGES, max_tokens=1000)
    assert isinstance(stream, Generator)
    first = next(stream)
    assert first.text
    started = time.monotonic()
    stream.close()  # as the loop does once a code block is complete
    assert time.monotonic() - started < 5
    assert not generate_threads()


def test_an_error_in_generate_is_raised_by_stream_not_a_hang(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = model._model  # type: ignore[attr-defined]

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(hf, "generate", broken)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="out of memory"):
        deltas(model)
    assert time.monotonic() - started < 5
    assert not generate_threads()


def test_an_error_midway_comes_after_the_text_so_far(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = model._model  # type: ignore[attr-defined]

    def fails_midway(**kwargs: Any) -> None:
        streamer = kwargs["streamer"]
        streamer.put(kwargs["input_ids"])  # the prompt, skipped
        for token in kwargs["input_ids"][0, 1:6]:
            streamer.put(token.reshape(1))
        raise RuntimeError("device lost")

    monkeypatch.setattr(hf, "generate", fails_midway)
    seen: list[Delta] = []
    with pytest.raises(RuntimeError, match="device lost"):
        for delta in model.stream(MESSAGES):
            seen.append(delta)
    assert all(d.usage is None for d in seen)
    assert not generate_threads()


def test_interpreter_runs_a_turn(model: Model) -> None:
    with get_executor("subprocess", timeout_s=30) as executor, executor.open() as session:
        interpreter = Interpreter(model, session, max_rounds=1, model_options={"max_tokens": 24})
        events = list(interpreter.chat("What is the sum of the squares of 1 to 100?"))
    last = events[-1]
    assert isinstance(last, Finished) and last.stop_reason in ("answered", "max_rounds"), last
    assert not generate_threads()


def test_interpreter_reports_a_failing_model(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(model._model, "generate", broken)  # type: ignore[attr-defined]
    with get_executor("subprocess", timeout_s=30) as executor, executor.open() as session:
        events = list(Interpreter(model, session, max_rounds=1).chat("hi"))
    last = events[-1]
    assert isinstance(last, Finished) and last.stop_reason == "model_error"
    assert "boom" in last.answer


# -- what is refused ---------------------------------------------------------------------
def test_tools_are_refused_naming_the_markdown_protocol(model: Model) -> None:
    from codeinterp.agent.protocols import PYTHON_TOOL

    with pytest.raises(ConfigError, match="markdown protocol"):
        deltas(model, tools=[PYTHON_TOOL])


def without_template(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    (to / "chat_template.jinja").unlink(missing_ok=True)
    config_file = to / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config))
    return to


def test_a_model_without_a_chat_template_is_refused(folder: Path, tmp_path: Path) -> None:
    base = without_template(folder, tmp_path / "base")
    with pytest.raises(ConfigError, match="no chat template"):
        get_model(f"hf:{base}")
    given = TransformersModel(str(base), chat_template=CHATML)
    assert given.prompt(MESSAGES).endswith("<|im_start|>assistant\n")


def test_a_template_without_a_system_role_gets_it_in_the_first_user_turn(folder: Path) -> None:
    strict = TransformersModel(str(folder), chat_template=NO_SYSTEM_ROLE)
    prompt = strict.prompt(MESSAGES)
    assert "<|im_start|>system" not in prompt
    assert prompt.startswith("<|im_start|>user\nYou are a helpful assistant.\n\nWhat is")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_a_missing_folder_is_a_clear_error(tmp_path: Path, no_network: list[object]) -> None:
    with pytest.raises(ConfigError, match="No model folder at"):
        get_model(f"hf:{tmp_path / 'nowhere'}")
    assert not no_network


def test_a_hub_name_not_in_the_cache_is_not_downloaded(no_network: list[object]) -> None:
    with pytest.raises(ConfigError, match="(?s)from local files.*hf download"):
        get_model("hf:codeinterp-tests/no-such-model")
    assert not no_network


def test_quantizing_needs_a_gpu(folder: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        get_model(f"hf:{folder}", quantize=4)
    with pytest.raises(ConfigError, match="4 or 8"):
        get_model(f"hf:{folder}", quantize=3)


def with_custom_code(folder: Path, to: Path, marker: Path) -> Path:
    """A copy of `folder` whose config points at code of its own (as ChatGLM's does)."""
    shutil.copytree(folder, to)
    config = json.loads((to / "config.json").read_text())
    config["model_type"] = "tinycustom"
    config["architectures"] = ["TinyForCausalLM"]
    config["auto_map"] = {
        "AutoConfig": "configuration_tiny.TinyConfig",
        "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM",
    }
    (to / "config.json").write_text(json.dumps(config))
    (to / "configuration_tiny.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig\n\n"
        "class TinyConfig(LlamaConfig):\n    model_type = 'tinycustom'\n"
    )
    (to / "modeling_tiny.py").write_text(
        "from transformers import LlamaForCausalLM\n"
        "from .configuration_tiny import TinyConfig\n\n"
        "class TinyForCausalLM(LlamaForCausalLM):\n    config_class = TinyConfig\n"
    )
    return to


def test_custom_code_is_refused_without_trust_remote_code(folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "custom-code-ran"
    custom = with_custom_code(folder, tmp_path / "custom", marker)
    with pytest.raises(ConfigError, match="trust_remote_code=True"):
        get_model(f"hf:{custom}")
    assert not marker.exists()


def test_loading_options_reach_transformers(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        original = auto.from_pretrained

        def recording(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            seen.append(dict(kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", recording)
    TransformersModel(str(folder))
    assert [(k["trust_remote_code"], k["local_files_only"]) for k in seen] == [(False, True)] * 2
    seen.clear()
    TransformersModel(str(folder), trust_remote_code=True)
    assert [k["trust_remote_code"] for k in seen] == [True, True]


def test_a_closed_model_says_so(folder: Path) -> None:
    closed = TransformersModel(str(folder))
    closed.close()
    with pytest.raises(ConfigError, match="closed"):
        list(closed.stream(MESSAGES))
