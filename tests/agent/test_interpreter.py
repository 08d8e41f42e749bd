"""The loop, driven by the scripted model against a real executor."""

from __future__ import annotations

import threading

from codeinterp.agent import (
    CodeBlock,
    Event,
    ExecutionDone,
    Finished,
    Interpreter,
    OutputEvent,
    RoundDone,
    TextDelta,
)
from codeinterp.executors import Session
from codeinterp.models.base import ToolCall
from codeinterp.models.scripted import ScriptedModel
from codeinterp.outputs import Stream


def run(interpreter: Interpreter, text: str) -> list[Event]:
    return list(interpreter.chat(text))


def finished(events: list[Event]) -> Finished:
    last = events[-1]
    assert isinstance(last, Finished)
    return last


def test_reply_without_code_is_the_answer(session: Session) -> None:
    model = ScriptedModel(["Paris is the capital of France."])
    events = run(Interpreter(model, session), "Capital of France?")
    assert finished(events) == Finished("answered", "Paris is the capital of France.", 1)
    assert not any(isinstance(e, CodeBlock) for e in events)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).startswith("Paris")


def test_code_runs_and_its_result_reaches_the_next_round(session: Session) -> None:
    model = ScriptedModel(
        [
            "Let me compute.\n```python\nsum(i * i for i in range(1, 101))\n```",
            "The sum of squares is 338350.",
        ]
    )
    events = run(Interpreter(model, session), "Sum of squares 1..100?")
    done = [e for e in events if isinstance(e, ExecutionDone)]
    assert len(done) == 1 and done[0].execution.result is not None
    assert done[0].execution.result.text == "338350"
    assert finished(events) == Finished("answered", "The sum of squares is 338350.", 2)
    round_two_prompt = model.prompts[1]
    assert round_two_prompt[-1].role == "user"
    assert "338350" in round_two_prompt[-1].content
    kinds = [type(e).__name__ for e in events if not isinstance(e, TextDelta | OutputEvent)]
    assert kinds == ["CodeBlock", "ExecutionDone", "RoundDone", "RoundDone", "Finished"]


def test_generation_stops_at_the_closing_fence(session: Session) -> None:
    # The model goes on to invent an output after its block; none of it may be kept.
    reply = "```python\nprint(6 * 7)\n```\nOutput: 41\nSo the answer is 41."
    model = ScriptedModel([reply, "It is 42."])
    events = run(Interpreter(model, session), "6 times 7?")
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "41" not in streamed
    assistant = model.prompts[1][-2]
    assert assistant.role == "assistant"
    assert assistant.content == "```python\nprint(6 * 7)\n```"
    assert "42" in model.prompts[1][-1].content


def test_outputs_stream_as_events_while_the_cell_runs(session: Session) -> None:
    model = ScriptedModel(["```python\nprint('a')\nprint('b')\n6 * 7\n```", "done"])
    events = run(Interpreter(model, session), "go")
    outputs = [e.output.text for e in events if isinstance(e, OutputEvent)]
    assert "".join(outputs[:-1]) == "a\nb\n" and outputs[-1] == "42"


def test_error_traceback_goes_back_to_the_model(session: Session) -> None:
    model = ScriptedModel(
        ["```python\nitems = [1, 2]\nitems[5]\n```", "```python\nitems[1]\n```", "It is 2."]
    )
    events = run(Interpreter(model, session), "second item?")
    assert "IndexError: list index out of range" in model.prompts[1][-1].content
    assert "items[5]" in model.prompts[1][-1].content
    assert finished(events).stop_reason == "answered"


def test_state_is_kept_across_rounds_and_turns(session: Session) -> None:
    model = ScriptedModel(
        ["```python\ntotal = 40\n```", "Stored.", "```python\ntotal + 2\n```", "It is 42."]
    )
    interpreter = Interpreter(model, session)
    run(interpreter, "store 40")
    events = run(interpreter, "add 2")
    results = [e.execution.result for e in events if isinstance(e, ExecutionDone)]
    assert results[0] is not None and results[0].text == "42"


def test_max_rounds_stops_a_model_that_never_answers(session: Session) -> None:
    model = ScriptedModel(["```python\n1\n```"] * 3)
    events = run(Interpreter(model, session, max_rounds=3), "loop")
    assert finished(events).stop_reason == "max_rounds"
    assert sum(isinstance(e, ExecutionDone) for e in events) == 3


def test_model_failure_is_a_model_error_event(session: Session) -> None:
    model = ScriptedModel([])  # no reply at all
    events = run(Interpreter(model, session), "hello")
    last = finished(events)
    assert last.stop_reason == "model_error"
    assert "no reply left" in last.answer


def test_interrupt_stops_a_running_cell_and_the_session_stays_usable(session: Session) -> None:
    model = ScriptedModel(["```python\nimport time\ntime.sleep(60)\n```", "never used"])
    interpreter = Interpreter(model, session)
    events: list[Event] = []
    for event in interpreter.chat("sleep"):
        events.append(event)
        if isinstance(event, CodeBlock):
            threading.Timer(0.3, interpreter.interrupt).start()
    assert finished(events).stop_reason == "interrupted"
    assert session.execute("print('usable')").stdout == "usable\n"


def test_an_interrupt_once_chat_is_called_stops_the_turn_before_the_model_is_asked(
    session: Session,
) -> None:
    model = ScriptedModel(["```python\nprint('ran')\n```", "never used"])
    interpreter = Interpreter(model, session)
    events = interpreter.chat("go")
    interpreter.interrupt()  # before the first event is asked for
    assert finished(list(events)) == Finished("interrupted", "", 1)
    assert model.prompts == []
    assert interpreter.messages[-1].role == "user"  # the next turn's text joins it


def test_an_interrupt_before_chat_belongs_to_an_earlier_turn(session: Session) -> None:
    model = ScriptedModel(["Hello."])
    interpreter = Interpreter(model, session)
    interpreter.interrupt()  # no turn running: nothing to stop
    assert finished(run(interpreter, "hi")) == Finished("answered", "Hello.", 1)


def test_prompts_only_grow_so_a_kv_cache_can_be_reused(session: Session) -> None:
    model = ScriptedModel(["```python\nx = 1\n```", "```python\nx + 1\n```", "2"])
    run(Interpreter(model, session), "go")
    first, second, third = model.prompts
    assert second[: len(first)] == first and third[: len(second)] == second


def test_tools_protocol_runs_native_tool_calls(session: Session) -> None:
    call = ToolCall(id="call_1", name="python", arguments='{"code": "print(2 ** 10)"}')
    model = ScriptedModel([call, "2 to the 10th is 1024."])
    events = run(Interpreter(model, session, protocol="tools"), "2**10?")
    assert finished(events) == Finished("answered", "2 to the 10th is 1024.", 2)
    tool_message = model.prompts[1][-1]
    assert tool_message.role == "tool" and tool_message.tool_call_id == "call_1"
    assert "1024" in tool_message.content
    assert model.calls[0]["tools"][0].name == "python"


def test_round_done_reports_every_round(session: Session) -> None:
    model = ScriptedModel(["```python\n1\n```", "ok"])
    events = run(Interpreter(model, session), "go")
    assert [e.round for e in events if isinstance(e, RoundDone)] == [1, 2]


def test_roles_alternate_after_a_turn_cut_at_the_round_limit(session: Session) -> None:
    model = ScriptedModel(["```python\n1\n```", "It was 1."])
    interpreter = Interpreter(model, session, max_rounds=1)
    assert finished(run(interpreter, "first")).stop_reason == "max_rounds"
    run(interpreter, "second")
    roles = [m.role for m in model.prompts[1]]
    assert roles == ["system", "user", "assistant", "user"]
    last = model.prompts[1][-1].content
    assert last.startswith("Execution result:") and last.endswith("second")


def test_plots_reach_a_vision_model_as_images_and_others_as_placeholders(
    session: Session,
) -> None:
    plot = "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\n```"
    for sees_images in (True, False):
        model = ScriptedModel([plot, "A rising line."])
        model.supports_images = sees_images
        run(Interpreter(model, session), "plot it")
        results = model.prompts[1][-1]
        assert "[image/png" in results.content  # the placeholder names size and file
        if sees_images:
            assert len(results.images) == 1 and results.images[0].startswith(b"\x89PNG")
        else:
            assert results.images == ()


def test_the_model_is_told_which_files_the_workspace_holds(session: Session) -> None:
    (session.workspace / "sales.csv").write_text("region,amount\nnorth,3\n")
    model = ScriptedModel(["Noted."])
    run(Interpreter(model, session, show_files=True), "total amount?")
    user = model.prompts[0][-1].content
    assert user.startswith("total amount?")
    assert "- sales.csv (" in user and "columns: region,amount" in user
    plain = ScriptedModel(["Noted."])
    run(Interpreter(plain, session), "total amount?")  # off by default
    assert plain.prompts[0][-1].content == "total amount?"


def test_after_an_error_the_model_is_asked_for_fixed_code(session: Session) -> None:
    model = ScriptedModel(["```python\n1 / 0\n```", "Sorry."])
    run(Interpreter(model, session, error_hint=True), "divide")
    assert model.prompts[1][-1].content.endswith(
        "Write the corrected code in one block and run it again."
    )


def test_code_first_constrains_only_the_first_reply_of_a_turn(session: Session) -> None:
    from codeinterp.agent.protocols import CODE_FIRST_GRAMMAR, MARKDOWN_GRAMMAR

    model = ScriptedModel(["```python\n1\n```", "It is 1."])
    run(Interpreter(model, session, constrain=True, code_first=True), "one?")
    assert [c["grammar"] for c in model.calls] == [CODE_FIRST_GRAMMAR, MARKDOWN_GRAMMAR]


def test_fix_first_makes_the_reply_after_a_failed_cell_open_with_code(session: Session) -> None:
    from codeinterp.agent.protocols import CODE_FIRST_GRAMMAR, MARKDOWN_GRAMMAR

    replies = ["```python\n1 / 0\n```", "```python\n1 / 1\n```", "It is 1.0."]
    model = ScriptedModel(replies)
    run(Interpreter(model, session, constrain=True, code_first=False), "one?")  # on by default
    # After the ZeroDivisionError: code; after the cell that worked: free again.
    assert [c["grammar"] for c in model.calls] == [
        MARKDOWN_GRAMMAR,
        CODE_FIRST_GRAMMAR,
        MARKDOWN_GRAMMAR,
    ]
    plain = ScriptedModel(replies[:1] + ["Division by zero."])
    run(Interpreter(plain, session, constrain=True, code_first=False, fix_first=False), "one?")
    assert [c["grammar"] for c in plain.calls] == [MARKDOWN_GRAMMAR, MARKDOWN_GRAMMAR]


def test_a_prefilling_model_is_handed_the_opening_fence_instead_of_a_grammar(
    session: Session,
) -> None:
    """Code first and fix first without a grammar: the loop writes "```python" for the model,
    which continues it; the reply, as shown and as kept in the history, is whole."""
    model = ScriptedModel(
        ["print(6 * 7)\n```", "```python\n1 / 0\n```", "print(42)\n```", "It is 42."],
        supports_prefill=True,
    )
    events = run(Interpreter(model, session, constrain=False), "six times seven?")
    prefills = [c.get("prefill") for c in model.calls]
    # Round 1: code first; round 2 follows a cell that worked; round 3 follows the error.
    assert prefills == ["```python\n", None, "```python\n", None]
    assert all(c["grammar"] is None for c in model.calls)
    shown = "".join(e.text for e in events if isinstance(e, TextDelta) and e.round == 1)
    assert shown == "```python\nprint(6 * 7)\n```"
    assert model.prompts[1][2].content == "```python\nprint(6 * 7)\n```"
    outputs = [e.output for e in events if isinstance(e, OutputEvent)]
    assert [o.text for o in outputs if isinstance(o, Stream)] == ["42\n", "42\n"]
    last = finished(events)
    assert (last.stop_reason, last.answer, last.rounds) == ("answered", "It is 42.", 4)


def test_prefill_is_used_only_where_the_model_supports_it(session: Session) -> None:
    model = ScriptedModel(["```python\n1\n```", "One."])
    run(Interpreter(model, session, constrain=False, prefill=True), "one?")
    assert [c.get("prefill") for c in model.calls] == [None, None]
