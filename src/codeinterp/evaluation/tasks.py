"""The task file format for `codeinterp eval`.

A suite is a TOML file of `[[task]]` tables (or a folder of such files). Each task:

    [[task]]
    id = "sum-of-squares"                 # unique in the suite
    prompt = "Compute the sum of the squares of 1..100."
    files = ["data/sales.csv"]            # optional: copied into the workspace (paths relative
                                          # to the suite file; kept under their base name)
    tags = ["math"]                       # optional, for reports

    [task.check]                          # exactly one kind of check:
    value = 338350                        #  a number that must appear in the final answer
    tolerance = 0.0                       #  (absolute; default 1e-6 of the value's size)
    # regex = "(?i)\\bparis\\b"            #  or a regular expression the final answer matches
    # python = "assert open('out.json').read().startswith('[')"
    #                                     #  or Python run in the task's workspace (a fresh
    #                                     #  session of the same executor): it passes when it
    #                                     #  raises nothing

The checker is the task's own, never the model's opinion of its work.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from codeinterp.errors import ConfigError

BUNDLED_SUITE = Path(__file__).parent / "suite" / "tasks.toml"


@dataclass(frozen=True)
class Check:
    value: float | None = None
    tolerance: float | None = None
    regex: str | None = None
    python: str | None = None

    @property
    def kind(self) -> str:
        return "value" if self.value is not None else "regex" if self.regex else "python"


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    check: Check
    files: tuple[Path, ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _task(raw: dict[str, object], origin: Path) -> Task:
    where = f"{origin}: task {raw.get('id', '?')!r}"
    task_id, prompt, check = raw.get("id"), raw.get("prompt"), raw.get("check")
    if not isinstance(task_id, str) or not isinstance(prompt, str):
        raise ConfigError(f"{where}: every task needs a string `id` and `prompt`.")
    if not isinstance(check, dict):
        raise ConfigError(f"{where}: add a [task.check] table (value, regex or python).")
    kinds = [k for k in ("value", "regex", "python") if k in check]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: a check has exactly one of value, regex, python.")
    value = check.get("value")
    if value is not None and not isinstance(value, int | float):
        raise ConfigError(f"{where}: `value` must be a number.")
    tolerance = check.get("tolerance")
    files = tuple((origin.parent / str(f)).resolve() for f in _strings(raw.get("files")))
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{where}: input file {path} does not exist.")
    return Task(
        id=task_id,
        prompt=prompt,
        check=Check(
            value=float(value) if value is not None else None,
            tolerance=float(tolerance) if isinstance(tolerance, int | float) else None,
            regex=str(check["regex"]) if "regex" in check else None,
            python=str(check["python"]) if "python" in check else None,
        ),
        files=files,
        tags=_strings(raw.get("tags")),
    )


def load_tasks(path: Path | None = None) -> list[Task]:
    """Tasks from a suite file or a folder of them (default: the bundled suite)."""
    path = BUNDLED_SUITE if path is None else Path(path)
    files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise ConfigError(f"No task file at {path}: give a .toml suite or a folder of them.")
    tasks: list[Task] = []
    for file in files:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
        tasks += [_task(raw, file) for raw in data.get("task", [])]
    ids = [t.id for t in tasks]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"Duplicate task ids in {path}: {', '.join(duplicates)}.")
    return tasks
