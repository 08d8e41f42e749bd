"""One exception hierarchy for infrastructure failures. Every message names the fix.

Errors in *user code* are never raised: they are data in `outputs.Execution`. These exceptions
are for what stops codeinterp itself from doing its job.

    CodeinterpError
    ├── ConfigError              bad option or unknown name (executor, model, ...)
    ├── DependencyMissing        an optional extra is not installed
    ├── RemoteWorkspace          a session's files are on another host, not reachable here
    └── SessionError
        ├── SessionStartError    the interpreter could not be started
        ├── SessionClosed        the session (or executor) was closed; open a new one
        └── SessionBusy          a cell is already running in this session
"""

from __future__ import annotations


class CodeinterpError(Exception):
    """Base of every error codeinterp raises on purpose."""


class ConfigError(CodeinterpError, ValueError):
    """An option or a name is wrong; the message says what is accepted."""


class DependencyMissing(CodeinterpError, ImportError):
    """An optional dependency is missing; the message gives the install command."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{package} is not installed, but {purpose} needs it — "
            f"run `pip install 'codeinterp[{extra}]'`"
        )
        self.package = package
        self.extra = extra


class RemoteWorkspace(CodeinterpError):
    """A session's workspace is on another host (`Capabilities.local_workspace` is False), so
    its files cannot be reached as a local path; only code running in the session sees them."""

    def __init__(self, executor: str, how: str) -> None:
        super().__init__(
            f"The files of a {executor!r} session live on the remote host that runs its kernel "
            "(e.g. the Jupyter gateway's server), not on this machine, so they cannot be listed, "
            f"read or written from here. Reach them with code in the session: {how}."
        )
        self.executor = executor


class SessionError(CodeinterpError):
    """Something is wrong with a session's interpreter (not with the user's code)."""


class SessionStartError(SessionError):
    """The interpreter process could not be started."""


class SessionClosed(SessionError):
    """The session or its executor has been closed."""

    def __init__(self, what: str = "session", action: str = "execute code") -> None:
        super().__init__(
            f"Cannot {action}: the {what} has been closed. Open a new session with "
            f"`executor.open()`."
        )


class SessionBusy(SessionError):
    """`execute` was called while another cell of the same session is running."""

    def __init__(self) -> None:
        super().__init__(
            "Cannot execute: a cell is already running in this session. Wait for it to finish, "
            "call `session.interrupt()`, or open another session for concurrent work."
        )
