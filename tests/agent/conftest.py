"""Fixtures of the loop's tests: the real sandbox executor, one session per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from codeinterp.executors import Executor, Session, get_executor


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with get_executor("sandbox", timeout_s=60) as ex:
        yield ex


@pytest.fixture
def session(executor: Executor) -> Iterator[Session]:
    with executor.open() as s:
        yield s
