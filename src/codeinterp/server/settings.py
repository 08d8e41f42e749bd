"""What `codeinterp serve` is told: one small value object, filled in at the edge (cli.py).

Nothing here reads the environment; the command line does, and passes the results in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from codeinterp.models.base import Model
from codeinterp.store import default_db_path

if TYPE_CHECKING:
    from codeinterp.agent.packages import PackageInstaller

DEFAULT_MAX_UPLOAD_MB = 100
# Worker threads for blocking work (cells, model streams, SQLite). A running cell holds one for
# its whole duration, so this bounds how many cells can run at once across all sessions.
DEFAULT_MAX_THREADS = 256
# A session unused this long is released (closed; a conversation's goes dormant).
DEFAULT_SESSION_IDLE_TIMEOUT_S = 3600.0


def default_data_dir() -> Path:
    """Where conversation workspaces live (one folder per conversation), across restarts."""
    return Path.home() / ".local" / "share" / "codeinterp" / "workspaces"


@dataclass(frozen=True)
class ServerSettings:
    """Everything the app needs; tests build one directly, the CLI from its arguments."""

    token: str
    """The bearer token every /api request must carry."""
    model: str = "qwen-0.5b"
    """The model spec (see codeinterp.models), loaded lazily on the first conversation turn."""
    executor: str = "sandbox"
    """The default executor, created at start-up; sessions may ask for another by name."""
    db_path: Path = field(default_factory=default_db_path)
    data_dir: Path = field(default_factory=default_data_dir)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    cell_timeout_s: float | None = None
    """Per-cell wall-clock limit; None: the executor's default."""
    protocol: Literal["markdown", "tools"] = "markdown"
    max_rounds: int = 6
    model_options: dict[str, Any] = field(default_factory=dict)
    executor_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyword arguments for each executor by name, e.g. {"gateway": {"url": ..., "token": ...}}."""
    model_factory: Callable[[], Model] | None = None
    """Builds the model instead of `get_model(model, **model_options)` (tests: a ScriptedModel)."""
    installer: PackageInstaller | None = None
    """Installs allowed missing packages for the loop (off unless given; see agent/packages)."""
    max_threads: int = DEFAULT_MAX_THREADS
    session_idle_timeout_s: float = DEFAULT_SESSION_IDLE_TIMEOUT_S
    """Release a session nobody used (no cell, no file access, no turn) for this long; 0: never.
    A plain API session is closed and forgotten; a conversation's only goes dormant."""

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("ServerSettings needs a non-empty token.")
        if not self.session_idle_timeout_s >= 0:  # also refuses NaN
            raise ValueError(
                f"session_idle_timeout_s must be 0 (never expire) or a positive number of "
                f"seconds, not {self.session_idle_timeout_s!r}."
            )
