"""The mutation groups (bench/mutation_groups.toml) still name real modules and tests, together cover
every module [tool.mutmut] mutates, and a group's copy is configured for that group alone."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bench import mutation

ROOT = Path(__file__).resolve().parents[2]
# Only constants, dataclasses and models: mutmut makes no mutant of them.
WITHOUT_MUTANTS = {
    "jobs/__init__.py",
    "jobs/bounds.py",
    "jobs/options.py",
    "jobs/result.py",
    "jobs/time_units.py",
}


def mutated_modules() -> set[str]:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]
    return {path.relative_to(ROOT).as_posix() for pattern in patterns for path in ROOT.glob(pattern)}


def test_every_group_names_existing_modules_and_tests() -> None:
    for name, group in mutation.groups().items():
        for path in (*group["modules"], *group["tests"]):
            assert (ROOT / path).exists(), f"{name}: {path} does not exist"


def test_the_groups_cover_every_mutated_module_once() -> None:
    listed = [module for group in mutation.groups().values() for module in group["modules"]]
    assert len(listed) == len(set(listed))
    assert set(listed) == mutated_modules() - WITHOUT_MUTANTS


def test_a_groups_copy_mutates_only_its_modules_with_its_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mutation, "SCRATCH", tmp_path)
    workdir = mutation.group_workdir("token-step")
    config = tomllib.loads((workdir / "pyproject.toml").read_text())["tool"]["mutmut"]
    group = mutation.groups()["token-step"]
    assert (config["only_mutate"], config["pytest_add_cli_args_test_selection"]) == (
        group["modules"],
        group["tests"],
    )
    assert (workdir / "jobs" / "token_step.py").read_bytes() == (ROOT / "jobs" / "token_step.py").read_bytes()
    # A file gone from the project is gone from the copy on the next run; mutmut's results stay.
    (workdir / "jobs" / "stale.py").write_text("")
    (workdir / "mutants").mkdir()
    (workdir / "mutants" / "kept.meta").write_text("{}")
    mutation.group_workdir("token-step")
    assert not (workdir / "jobs" / "stale.py").exists()
    assert (workdir / "mutants" / "kept.meta").exists()
