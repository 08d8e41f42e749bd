"""Which loop settings help the embedded model: the bundled suite under named variants.

Each variant switches one thing of the loop (what the model is shown, how results and errors
come back, constrained decoding) so that every default can be backed by a measured gain.
Run: python -m bench.eval_variants --variants ours,naive --model qwen-0.5b --jobs 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from codeinterp.evaluation.runner import Evaluator, summary
from codeinterp.evaluation.tasks import load_tasks
from codeinterp.executors import get_executor
from codeinterp.models import get_model

VARIANTS: dict[str, dict[str, Any]] = {
    "ours": {},
    "naive": {"show_files": False, "error_hint": False, "constrain": False},
    "no-files": {"show_files": False},
    "no-error-hint": {"error_hint": False},
    "no-grammar": {"constrain": False},
    "code-first": {"code_first": True},
    "code-first-no-hint": {"code_first": True, "error_hint": False},
    "code-first-no-files": {"code_first": True, "show_files": False},
    "fix-first": {"fix_first": True},
    "grammar-first": {"prefill": False},  # code/fix first forced by a grammar
    "prefill": {"prefill": True},  # ... by writing the opening fence; grammar on other replies
    "prefill-free": {"prefill": True, "constrain": False},  # ... and no grammar at all
    "error-hint": {"error_hint": True},
    "files": {"show_files": True},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_variants")
    parser.add_argument("--variants", default="ours,naive")
    parser.add_argument("--model", default="qwen-0.5b")
    parser.add_argument("--no-feedback", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("bench/results/eval_variants.json"))
    args = parser.parse_args(argv)
    tasks = load_tasks()
    report: dict[str, Any] = {"model": args.model, "feedback": not args.no_feedback, "runs": {}}
    import threading

    local = threading.local()

    def factory() -> Any:
        if not hasattr(local, "model"):
            local.model = get_model(args.model, n_threads=args.threads)
        return local.model

    with get_executor("sandbox") as executor:
        for name in args.variants.split(","):
            started = time.monotonic()
            evaluator = Evaluator(
                factory, executor, feedback=not args.no_feedback,
                interpreter_options=VARIANTS[name],
            )  # fmt: skip
            results = evaluator.run(tasks, jobs=args.jobs)
            wall = time.monotonic() - started
            s = summary(results)
            report["runs"][name] = {
                "summary": s,
                "wall_s": round(wall, 1),
                "solved": sorted(r.task_id for r in results if r.solved),
                "results": [r.to_dict() for r in results],
            }
            print(
                f"{name:15} {s['solved']}/{s['tasks']} solved, {s['errors']} errors, "
                f"{s['format_failures']} format failures, {wall:.0f} s wall",
                flush=True,
            )
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
