"""`SandboxPolicy`: what a session may touch and use, as one explicit value object."""

from __future__ import annotations

from dataclasses import dataclass, field

MiB = 1 << 20
GiB = 1 << 30

DEFAULT_PRELOAD = ("numpy", "pandas", "matplotlib.pyplot")


@dataclass(frozen=True)
class SandboxPolicy:
    """Limits and permissions of one sandboxed session.

    Defaults suit model-written analysis code on a small machine: no network at all, 1 GiB of
    memory, 256 processes, one CPU's worth of time, a private 256 MiB /tmp.
    """

    network: bool = False
    """False: the session gets an empty network namespace (no interface is up, not even lo)."""
    memory_bytes: int | None = 1 * GiB
    pids_max: int | None = 256
    cpu_quota: float | None = 1.0
    """CPUs the session may use at once (cgroup cpu quota); None for no limit."""
    tmp_bytes: int = 256 * MiB
    workspace_bytes: int = 1 * GiB
    """Size of a workspace the executor creates itself (a tmpfs, when the machine allows)."""
    workspace_inodes: int = 100_000
    max_file_bytes: int = 1 * GiB
    max_open_files: int = 1024
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the session; nothing of the host's leaks otherwise."""
    allow_unsandboxed: bool = False
    """Run even where an essential layer (namespaces, seccomp, unprivileged uid) is missing."""

    def base_environment(self) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "MPLBACKEND": "module://codeinterp.worker.mplbackend",
            "MPLCONFIGDIR": "/tmp/.matplotlib",
            "PYTHONDONTWRITEBYTECODE": "1",
            # One BLAS thread: sessions share few cores, and thread pools do not survive fork.
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        env.update(self.env)
        return env
