"""Missing packages: installed only when allowed, from a local wheelhouse, outside the sandbox."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from codeinterp.agent import Finished, Interpreter
from codeinterp.agent.packages import PackageInstaller, PackagePolicy
from codeinterp.executors import Executor
from codeinterp.models.scripted import ScriptedModel

USE_IT = "```python\nimport tinypkg\nprint(tinypkg.ANSWER)\n```"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real wheel of a tiny package, built here (nothing is fetched)."""
    source = tmp_path_factory.mktemp("tinypkg-src")
    (source / "tinypkg").mkdir()
    (source / "tinypkg" / "__init__.py").write_text("ANSWER = 4242\n")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinypkg"\nversion = "1.0"\n'
    )
    house = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(house), str(source)],
        check=True,
    )  # fmt: skip
    assert list(house.glob("tinypkg-1.0-*.whl"))
    return house


def test_allowed_missing_package_is_installed_and_the_model_is_told(
    executor: Executor, wheelhouse: Path
) -> None:
    policy = PackagePolicy(allow={"tinypkg": "tinypkg==1.0"}, find_links=wheelhouse)
    model = ScriptedModel([USE_IT, USE_IT, "The answer is 4242."])
    with executor.open() as session:
        interpreter = Interpreter(model, session, installer=PackageInstaller(policy))
        events = list(interpreter.chat("print tinypkg.ANSWER"))
        told = model.prompts[1][-1].content
        assert "ModuleNotFoundError" in told
        assert "installed tinypkg==1.0" in told and "run your code again" in told
        assert "4242" in model.prompts[2][-1].content  # the second try imported it
        assert isinstance(events[-1], Finished) and events[-1].stop_reason == "answered"
        installed = session.workspace / ".codeinterp" / "site-packages" / "tinypkg"
        assert (installed / "__init__.py").exists()  # in the session's own folder


def test_package_not_on_the_allow_list_is_not_installed(
    executor: Executor, wheelhouse: Path
) -> None:
    policy = PackagePolicy(allow={"otherpkg": "otherpkg"}, find_links=wheelhouse)
    model = ScriptedModel([USE_IT, "I cannot."])
    with executor.open() as session:
        list(Interpreter(model, session, installer=PackageInstaller(policy)).chat("go"))
        assert "not on the list" in model.prompts[1][-1].content
        assert not (session.workspace / ".codeinterp" / "site-packages" / "tinypkg").exists()


def test_nothing_is_installed_by_default(executor: Executor) -> None:
    model = ScriptedModel([USE_IT, "I cannot."])
    with executor.open() as session:
        list(Interpreter(model, session).chat("go"))
        told = model.prompts[1][-1].content
        assert "ModuleNotFoundError" in told and "codeinterp:" not in told
        assert not PackagePolicy().enabled
