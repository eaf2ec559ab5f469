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


def test_every_group_names_existing_modules_and_tests() -> None:
    for name, group in mutation.groups().items():
        for path in (*group["modules"], *group["tests"]):
            assert (ROOT / path).exists(), f"{name}: {path} does not exist"


def test_the_groups_cover_every_mutated_module_once() -> None:
    listed = [module for group in mutation.groups().values() for module in group["modules"]]
    assert len(listed) == len(set(listed))
    assert set(listed) == mutation.mutated_modules() - WITHOUT_MUTANTS


def test_a_groups_copy_mutates_only_its_modules_with_its_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small project of its own (not a git checkout: the copy then walks the tree).
    project = tmp_path / "project"
    for name in ("pyproject.toml", "jobs/token_step.py", "tests/jobs/test_token_step.py"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes((ROOT / name).read_bytes())
    for private in ("deploy/.env", ".hypothesis/examples/1"):
        (project / private).parent.mkdir(parents=True, exist_ok=True)
        (project / private).write_text("not for the copy")
    monkeypatch.setattr(mutation, "ROOT", project)
    monkeypatch.setattr(mutation, "SCRATCH", tmp_path / "scratch")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))

    workdir = mutation.group_workdir("token-step")
    config = tomllib.loads((workdir / "pyproject.toml").read_text())["tool"]["mutmut"]
    group = mutation.groups()["token-step"]
    assert (config["only_mutate"], config["pytest_add_cli_args_test_selection"]) == (
        group["modules"],
        group["tests"],
    )
    assert (workdir / "jobs" / "token_step.py").read_bytes() == (ROOT / "jobs" / "token_step.py").read_bytes()
    assert not (workdir / "deploy" / ".env").exists() and not (workdir / ".hypothesis").exists()

    # Next run: a file gone from the project is gone from the copy and from mutmut's copy of it;
    # mutmut's results and the mutated module it generated stay.
    (project / "tests" / "jobs" / "test_token_step.py").unlink()
    mutants = workdir / "mutants"
    for name in ("tests/jobs/test_token_step.py", "jobs/token_step.py", "jobs/token_step.py.meta"):
        (mutants / name).parent.mkdir(parents=True, exist_ok=True)
        (mutants / name).write_text("")
    mutation.group_workdir("token-step")
    assert not (workdir / "tests" / "jobs" / "test_token_step.py").exists()
    assert not (mutants / "tests" / "jobs" / "test_token_step.py").exists()
    assert (mutants / "jobs" / "token_step.py").exists() and (
        mutants / "jobs" / "token_step.py.meta"
    ).exists()
