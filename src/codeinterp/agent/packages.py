"""Installing a missing package when a cell fails with ModuleNotFoundError — only if allowed.

Off by default. When on, only packages on an allow-list are installed, only from the configured
index or a local wheelhouse, by the supervisor (this process, outside the sandbox: the session
has no network), into the session's own folder `<workspace>/.codeinterp/site-packages`, which
every worker has on its `sys.path`. The model is then told what happened and can run its code
again.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from codeinterp.executors.base import Session
from codeinterp.outputs import Execution

SITE_DIR = ".codeinterp/site-packages"  # relative to the workspace; see worker/main.py
MISSING = re.compile(r"No module named '([\w.]+)'")
INSTALL_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class PackagePolicy:
    """Which missing modules may be installed, and from where.

    `allow` maps an importable module name to its pip requirement (e.g. {"yaml": "pyyaml",
    "tinypkg": "tinypkg==1.0"}); a module not listed is never installed.
    """

    allow: dict[str, str] = field(default_factory=dict)
    index_url: str | None = None
    find_links: Path | None = None  # a local wheelhouse; with it and no index, nothing leaves
    # the machine

    @property
    def enabled(self) -> bool:
        return bool(self.allow)


def missing_module(execution: Execution) -> str | None:
    """The top-level module a cell failed to import, if that is how it failed."""
    error = execution.error
    if error is None or error.ename != "ModuleNotFoundError":
        return None
    match = MISSING.search(error.evalue)
    return match.group(1).split(".")[0] if match else None


class PackageInstaller:
    def __init__(self, policy: PackagePolicy) -> None:
        self.policy = policy

    def handle(self, session: Session, execution: Execution) -> str | None:
        """If the cell failed on a missing module, install it if allowed; a note for the model."""
        module = missing_module(execution)
        if module is None:
            return None
        requirement = self.policy.allow.get(module)
        if requirement is None:
            return (
                f"[codeinterp: the module '{module}' is not installed and is not on the list of "
                "packages that may be installed; solve the task without it]"
            )
        target = session.workspace / SITE_DIR
        target.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
                   "--disable-pip-version-check", "--target", str(target)]  # fmt: skip
        if self.policy.find_links is not None:
            command += ["--find-links", str(self.policy.find_links)]
            if self.policy.index_url is None:
                command.append("--no-index")
        if self.policy.index_url is not None:
            command += ["--index-url", self.policy.index_url]
        command.append(requirement)
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            return f"[codeinterp: installing {requirement} timed out; solve the task without it]"
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
            return f"[codeinterp: installing {requirement} failed: {reason}]"
        # The folder may not have existed when the interpreter started: forget that it was
        # missing, so the next import looks again.
        session.execute(
            "import importlib, sys\n"
            f"sys.path_importer_cache.pop({str(_inside(session, target))!r}, None)\n"
            "importlib.invalidate_caches()"
        )
        return f"[codeinterp: installed {requirement} for '{module}'; run your code again]"


def _inside(session: Session, host_path: Path) -> Path:
    """The path as the session sees it (a sandbox sees its workspace as /workspace)."""
    relative = host_path.relative_to(session.workspace)
    seen_as = getattr(session, "workspace_inside", None)
    return Path(seen_as) / relative if seen_as else host_path
