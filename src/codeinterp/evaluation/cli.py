"""`codeinterp eval`: run a task suite through the loop; a table for people, JSON for machines."""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
from pathlib import Path
from typing import Any

from codeinterp.cli.executor_args import executor_options
from codeinterp.evaluation.runner import Evaluator, TaskResult, summary
from codeinterp.evaluation.tasks import load_tasks
from codeinterp.executors import get_executor
from codeinterp.models.base import Model

EPILOG = """\
examples:
  codeinterp eval                                  the bundled suite, embedded model
  codeinterp eval --no-feedback                    one round: the first code is final
  codeinterp eval my-tasks.toml --model openai:gpt-4o-mini --jobs 4
  codeinterp eval --only sum-of-squares,csv-mean --repeat 3 --json results.json
"""


def add_parser(commands: Any, loop_options: Any, model_options: Any) -> None:
    """Register `eval`; `loop_options` adds --model etc., `model_options(args)` maps them."""
    parser = commands.add_parser(
        "eval",
        help="measure how often the loop solves a task suite",
        description="Run tasks through the full loop (model + executor) and score each with "
        "its own checker. See codeinterp/evaluation/tasks.py for the task file format.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("tasks", nargs="?", type=Path, help="a .toml suite or a folder of them")
    parser.add_argument("--no-feedback", action="store_true", help="one round per task")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="runs per task")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="tasks in parallel")
    parser.add_argument("--only", metavar="IDS", help="comma-separated task ids to run")
    parser.add_argument(
        "--json", metavar="PATH", help="write every result as JSON there ('-': print it)"
    )
    loop_options(parser)
    parser.set_defaults(handler=lambda args: cmd_eval(args, model_options(args)))


def _model_factory(args: argparse.Namespace, options: dict[str, object]) -> Any:
    """One model per worker thread: a loaded local model serves one generation at a time."""
    from codeinterp.models import get_model

    local = threading.local()
    models: list[Model] = []

    def factory() -> Model:
        if not hasattr(local, "model"):
            local.model = get_model(args.model, **options)
            models.append(local.model)
        model: Model = local.model
        return model

    return factory, models


def cmd_eval(args: argparse.Namespace, model_options: dict[str, object]) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    tasks = load_tasks(args.tasks)
    if args.only:
        wanted = set(args.only.split(","))
        tasks = [t for t in tasks if t.id in wanted]
    console = Console(stderr=args.json == "-")
    factory, models = _model_factory(args, model_options)
    feedback = not args.no_feedback
    options = executor_options(args)
    with get_executor(args.executor, timeout_s=args.timeout_s, **options) as executor:
        evaluator = Evaluator(
            factory,
            executor,
            feedback=feedback,
            max_rounds=args.max_rounds,
            interpreter_options={"protocol": args.protocol},
        )
        columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            bar = progress.add_task("solving", total=len(tasks) * args.repeat)

            def advance(result: TaskResult) -> None:
                mark = "solved" if result.solved else "failed"
                progress.update(bar, advance=1, description=f"{result.task_id}: {mark}")

            results = evaluator.run(tasks, repeat=args.repeat, jobs=args.jobs, on_result=advance)
    for model in models:
        model.close()
    report = {
        "model": args.model,
        "executor": args.executor,
        "feedback": feedback,
        "max_rounds": evaluator.max_rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "summary": summary(results),
        "results": [r.to_dict() for r in results],
    }
    if args.json == "-":
        print(json.dumps(report, indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.json != "-":
        table = Table("task", "solved", "rounds", "runs", "errors", "format", "tokens", "s")
        for r in results:
            table.add_row(
                r.task_id, "yes" if r.solved else "no", str(r.rounds), str(r.executions),
                str(r.errors), str(r.format_failures),
                str(r.prompt_tokens + r.completion_tokens), f"{r.wall_s:.1f}",
            )  # fmt: skip
        console.print(table)
        s = report["summary"]
        console.print(
            f"[bold]{s['solved']}/{s['tasks']} solved[/bold] ({s['solve_rate']:.0%}) — "
            f"model {args.model}, {'with' if feedback else 'without'} feedback, "
            f"{s['errors']} failed executions, {s['format_failures']} format failures, "
            f"{s['wall_s']:.0f} s"
        )
    return 0
