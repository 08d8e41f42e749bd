"""Runs tasks through the full loop and scores them with their own checkers.

Per task: solved or not, rounds used, executions that raised, format failures (the model tried
to write code but produced nothing runnable), tokens, wall time. `feedback=False` gives the
model one round only: its first code is final, which measures what execution feedback adds.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from codeinterp.agent import ExecutionDone, Finished, Interpreter, RoundDone, TextDelta
from codeinterp.agent.events import Event
from codeinterp.evaluation.tasks import Task
from codeinterp.executors.base import Executor, Session
from codeinterp.models.base import Model
from codeinterp.render import render_for_model

NUMBER = re.compile(r"-?\d[\d,_]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")


@dataclass
class TaskResult:
    task_id: str
    attempt: int
    solved: bool
    stop_reason: str
    rounds: int
    executions: int
    errors: int  # executions that raised
    format_failures: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    answer: str
    detail: str = ""  # why a check failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def numbers_in(text: str) -> list[float]:
    found = []
    for match in NUMBER.findall(text):
        try:
            found.append(float(match.replace(",", "").replace("_", "")))
        except ValueError:
            continue
    return found


def value_matches(expected: float, text: str, tolerance: float | None) -> bool:
    allowed = tolerance if tolerance is not None else max(1e-6, abs(expected) * 1e-6)
    return any(math.isclose(n, expected, abs_tol=allowed) for n in numbers_in(text))


def _tried_code_but_failed(reply: str, ran: bool) -> bool:
    """A format failure: the reply opened a code fence, yet nothing ran (or it did not parse)."""
    return "```" in reply and not ran


class Evaluator:
    def __init__(
        self,
        model_factory: Callable[[], Model],
        executor: Executor,
        *,
        feedback: bool = True,
        max_rounds: int = 6,
        cell_timeout_s: float = 30.0,
        interpreter_options: dict[str, Any] | None = None,
    ) -> None:
        self.model_factory = model_factory
        self.executor = executor
        self.feedback = feedback
        self.max_rounds = max_rounds if feedback else 1
        self.cell_timeout_s = cell_timeout_s
        self.interpreter_options = dict(interpreter_options or {})

    def run_task(self, task: Task, attempt: int = 1) -> TaskResult:
        started = time.monotonic()
        model = self.model_factory()
        with self.executor.open() as session:
            for path in task.files:
                shutil.copy(path, session.workspace / path.name)
            interpreter = Interpreter(
                model,
                session,
                max_rounds=self.max_rounds,
                cell_timeout_s=self.cell_timeout_s,
                **self.interpreter_options,
            )
            events = list(interpreter.chat(task.prompt))
            result = self._score(task, attempt, events, started)
            if task.check.python is not None:
                result.solved, result.detail = self._check_workspace(task, session)
        return result

    def _score(self, task: Task, attempt: int, events: list[Event], started: float) -> TaskResult:
        finished = next(e for e in reversed(events) if isinstance(e, Finished))
        executions = [e.execution for e in events if isinstance(e, ExecutionDone)]
        replies: dict[int, str] = {}
        for e in events:
            if isinstance(e, TextDelta):
                replies[e.round] = replies.get(e.round, "") + e.text
        ran_rounds = {e.round for e in events if isinstance(e, ExecutionDone)}
        syntax_errors = sum(
            1 for x in executions if x.error is not None and x.error.ename == "SyntaxError"
        )
        format_failures = syntax_errors + sum(
            _tried_code_but_failed(text, r in ran_rounds) for r, text in replies.items()
        )
        usage = [e.usage for e in events if isinstance(e, RoundDone) and e.usage is not None]
        # With feedback the model's final words are judged; without, the output of its code.
        if self.feedback and finished.stop_reason == "answered":
            judged = finished.answer
        else:
            outputs = [render_for_model(x, max_chars=4000) for x in executions]
            judged = "\n".join([finished.answer, *outputs])
        solved, detail = self._check_text(task, judged)
        return TaskResult(
            task_id=task.id,
            attempt=attempt,
            solved=solved,
            stop_reason=finished.stop_reason,
            rounds=finished.rounds,
            executions=len(executions),
            errors=sum(1 for x in executions if x.error is not None or x.lost),
            format_failures=format_failures,
            prompt_tokens=sum(u.prompt_tokens - u.cached_tokens for u in usage),
            completion_tokens=sum(u.completion_tokens for u in usage),
            wall_s=round(time.monotonic() - started, 3),
            answer=finished.answer[-500:],
            detail=detail,
        )

    @staticmethod
    def _check_text(task: Task, text: str) -> tuple[bool, str]:
        check = task.check
        if check.value is not None:
            ok = value_matches(check.value, text, check.tolerance)
            return ok, "" if ok else f"expected {check.value:g} in the answer"
        if check.regex is not None:
            ok = re.search(check.regex, text) is not None
            return ok, "" if ok else f"answer does not match {check.regex!r}"
        return False, ""  # python checks run against the workspace

    def _check_workspace(self, task: Task, session: Session) -> tuple[bool, str]:
        """Run the task's Python check in a fresh interpreter on the task's workspace."""
        assert task.check.python is not None
        session.restart()  # nothing the model defined can fool the check
        result = session.execute(task.check.python, timeout_s=self.cell_timeout_s)
        if result.ok:
            return True, ""
        reason = result.error.ename + ": " + result.error.evalue if result.error else result.lost
        return False, f"check failed: {reason or 'timeout'}"

    def run(
        self,
        tasks: list[Task],
        *,
        repeat: int = 1,
        jobs: int = 1,
        on_result: Callable[[TaskResult], None] | None = None,
    ) -> list[TaskResult]:
        work = [(task, attempt) for attempt in range(1, repeat + 1) for task in tasks]
        results: list[TaskResult] = []

        def one(item: tuple[Task, int]) -> TaskResult:
            result = self.run_task(*item)
            if on_result is not None:
                on_result(result)
            return result

        if jobs <= 1:
            results = [one(item) for item in work]
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                results = list(pool.map(one, work))
        return results


def summary(results: list[TaskResult]) -> dict[str, Any]:
    n = len(results) or 1
    return {
        "tasks": len(results),
        "solved": sum(r.solved for r in results),
        "solve_rate": round(sum(r.solved for r in results) / n, 3),
        "rounds_mean": round(sum(r.rounds for r in results) / n, 2),
        "executions": sum(r.executions for r in results),
        "errors": sum(r.errors for r in results),
        "format_failures": sum(r.format_failures for r in results),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "wall_s": round(sum(r.wall_s for r in results), 1),
    }
