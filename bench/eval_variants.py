"""Which loop settings help the embedded model: the bundled suite under named variants.

Every variant spells out all the loop settings it measures, so it means the same thing after a
default changes; they are the rows of the README's "Evaluation" table, in its order:
naive, grammar, code-first, code-first-no-hint, code-first-no-files, grammar-code-first,
fix-first, prefill, ours (the defaults), error-hint, files.
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

# The seed-style loop: free decoding, nothing forced, nothing added to prompts or results.
NAIVE: dict[str, Any] = {
    "constrain": False,
    "prefill": False,
    "code_first": False,
    "fix_first": False,
    "show_files": False,
    "error_hint": False,
}
# The first session's defaults: code first forced by a grammar, no hint, no listing.
GRAMMAR_CODE_FIRST = NAIVE | {"constrain": True, "code_first": True}
FIX_FIRST = GRAMMAR_CODE_FIRST | {"fix_first": True}

VARIANTS: dict[str, dict[str, Any]] = {
    "naive": NAIVE,
    "grammar": NAIVE | {"constrain": True, "show_files": True, "error_hint": True},
    "code-first": NAIVE | {"constrain": True, "code_first": True, "show_files": True,
                           "error_hint": True},
    "code-first-no-hint": NAIVE | {"constrain": True, "code_first": True, "show_files": True},
    "code-first-no-files": NAIVE | {"constrain": True, "code_first": True, "error_hint": True},
    "grammar-code-first": GRAMMAR_CODE_FIRST,
    "fix-first": FIX_FIRST,
    "prefill": FIX_FIRST | {"prefill": True},  # code forced by prefill; grammar on other replies
    "ours": {},  # the defaults: prefill, code first, fix first, no grammar, no hint, no listing
    "error-hint": {"error_hint": True},
    "files": {"show_files": True},
}  # fmt: skip


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
