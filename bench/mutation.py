"""Mutation score of the engine and the worker's guarantees: how much of the code, changed by one
token, the test suite notices.

    ./dev mutation                      # installs mutmut, runs it, prints the score and every survivor
    ./dev mutation --group protocol     # one group of bench/mutation_groups.toml, in .mutation/protocol/
    ./dev mutation --group protocol 'jobs.validate.*'   # those mutants again, with the tests as they are now
    python -m bench.mutation --report [--group NAME]   # only the report of the last run

mutmut (configured in pyproject.toml, [tool.mutmut]) copies the code to `mutants/`, makes one
mutant per changed operator, constant or argument, and runs, per mutant, only the tests that
cover the mutated function (it measures that first), stopping at the first failure. A mutant is
killed when a test fails, survives when every covering test passes. The equivalent mutants
(changes no caller can observe, such as a codec name's letter case) are listed with their reason
in bench/mutation_equivalents.txt and left out of the score. Slow: not part of CI; the last
result is in bench/README.md.

Some mutants remove a time limit, and the check then waits forever without using CPU, which
mutmut's CPU-time limit never notices; a watcher sends such a mutant's process SIGXCPU, as
mutmut's limit would, after IDLE_LIMIT_S without CPU, and it counts as a timeout (killed).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "bench" / "mutation_equivalents.txt"
GROUPS = ROOT / "bench" / "mutation_groups.toml"
SCRATCH = ROOT / ".mutation"
TARGET_KILLED = 0.85
# A test that waits for a server does so for seconds, never for a minute without any CPU.
IDLE_LIMIT_S = 60.0
WATCH_EVERY_S = 5.0
# A mutant's tests mostly wait on servers and deadlines: at one per core the CPU stayed 90 % idle.
CHILDREN_PER_CORE = 3

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code), folded into what the score needs.
KILLED_CODES = {1, 3, 37}
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}
TIMEOUT_CODES = {-24, 24, 152, 255, 36}


@dataclass
class ModuleScore:
    killed: int = 0
    timeouts: int = 0
    equivalent: int = 0
    survivors: list[str] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)
    other: Counter[int | None] = field(default_factory=Counter)

    @property
    def counted(self) -> int:
        # A timeout is a kill: the mutant made a check hang, which a test with a deadline noticed.
        return self.killed + self.timeouts + len(self.survivors) + len(self.untested)

    @property
    def score(self) -> float:
        return (self.killed + self.timeouts) / self.counted if self.counted else 1.0


def equivalents() -> dict[str, str]:
    """Mutant name -> why no caller can tell it from the original."""
    if not EQUIVALENTS.exists():
        return {}
    listed: dict[str, str] = {}
    for line in EQUIVALENTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            listed[name] = reason.strip()
    return listed


def scores(mutants: Path) -> dict[str, ModuleScore]:
    by_module: dict[str, ModuleScore] = defaultdict(ModuleScore)
    equivalent = equivalents()
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = meta.relative_to(mutants).as_posix().removesuffix(".meta")
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            score = by_module[module]
            if name in equivalent:
                score.equivalent += 1
            elif code in KILLED_CODES:
                score.killed += 1
            elif code in TIMEOUT_CODES:
                score.timeouts += 1
            elif code in SURVIVED_CODES:
                score.survivors.append(name)
            elif code in NO_TESTS_CODES:
                score.untested.append(name)
            else:
                score.other[code] += 1
    return by_module


def report(workdir: Path) -> bool:
    """Print the score by module and the survivors; True when the target is met."""
    by_module = scores(workdir / "mutants")
    if not by_module:
        print(f"no mutmut results in {workdir / 'mutants'}: run `./dev mutation` first", file=sys.stderr)
        return False
    total = ModuleScore()
    header = ("module", "mutants", "killed", "survived", "no test", "equiv", "score")
    print("{:42} {:>8} {:>8} {:>9} {:>8} {:>6} {:>7}".format(*header))
    for module, s in sorted(by_module.items()):
        print(
            f"{module:42} {s.counted + s.equivalent:8} {s.killed + s.timeouts:8} {len(s.survivors):9} "
            f"{len(s.untested):8} {s.equivalent:6} {s.score:7.1%}"
        )
        total.killed += s.killed
        total.timeouts += s.timeouts
        total.equivalent += s.equivalent
        total.survivors += s.survivors
        total.untested += s.untested
        total.other += s.other
    print(
        f"{'all':42} {total.counted + total.equivalent:8} {total.killed + total.timeouts:8} "
        f"{len(total.survivors):9} {len(total.untested):8} {total.equivalent:6} {total.score:7.1%}"
    )
    if total.other:
        print(f"not counted (not checked, interrupted, suspicious): {dict(total.other)}")
    if total.survivors or total.untested:
        print("\nsurvivors (`mutmut show NAME` prints the change):")
        for name in total.survivors + total.untested:
            print(f"  {name}")
    below = sorted(module for module, s in by_module.items() if s.score < TARGET_KILLED)
    verdict = "met" if not below else "MISSED by " + ", ".join(below)
    print(
        f"\nkilled {total.score:.1%} of non-equivalent mutants; target {TARGET_KILLED:.0%} in every module: "
        f"{verdict}"
    )
    return not below


def mutated_modules() -> set[str]:
    """The modules [tool.mutmut] mutates, as paths relative to the project."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]
    return {
        path.relative_to(ROOT).as_posix()
        for pattern in patterns
        for path in ROOT.glob(pattern)
        if path.suffix == ".py"
    }


def groups() -> dict[str, dict[str, list[str]]]:
    return tomllib.loads(GROUPS.read_text())


# Not copied into a group's work tree when git cannot say what the project's files are: version
# control, environments, caches, earlier runs, and the deploy folder's own secrets.
NOT_COPIED = {".venv", ".mutation", "mutants", "__pycache__", "build", "dist"}
NOT_COPIED_FILES = {"deploy/.env"}


def _project_files() -> list[str]:
    """The files of the work tree a run needs: what git tracks or would (ignored files are not
    copied: caches, environments, deploy/.env), or, without git, a walk skipping the same."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0:
        return [name for name in listed.stdout.decode().split("\0") if name and (ROOT / name).is_file()]
    found = []
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [
            d
            for d in subdirectories
            if d not in NOT_COPIED and not d.startswith(".") and not d.endswith(".egg-info")
        ]
        found += [(Path(directory) / name).relative_to(ROOT).as_posix() for name in files]
    return [name for name in found if name not in NOT_COPIED_FILES]


def drop_stale_copies(workdir: Path, mutated: set[str]) -> None:
    """mutmut copies a file into mutants/ only where none is yet, and never removes one: a copy
    whose source changed or is gone would still be imported. Such copies are dropped before a
    run (mutmut copies the current ones again); its results, its stats and the mutated modules,
    which it regenerates itself, stay."""
    mutants = workdir / "mutants"
    for copy in mutants.rglob("*") if mutants.is_dir() else ():
        relative = copy.relative_to(mutants).as_posix()
        if (
            not copy.is_file()
            or relative in mutated
            or relative.endswith(".meta")
            or relative.startswith("mutmut-")
            or "__pycache__" in relative
        ):
            continue
        source = workdir / relative
        if not source.is_file() or not filecmp.cmp(source, copy, shallow=False):
            copy.unlink()


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(value) for value in values) + "]"


def group_workdir(name: str) -> Path:
    """A copy of the work tree in .mutation/NAME whose [tool.mutmut] names only the group.

    Kept between runs: mutmut keeps its results in mutants/ there and reruns only the functions
    that changed, so a stopped run resumes where it stopped.
    """
    group = groups()[name]
    workdir = SCRATCH / name
    files = _project_files()
    for stale in workdir.rglob("*") if workdir.exists() else ():
        relative = stale.relative_to(workdir).as_posix()
        if stale.is_file() and not relative.startswith("mutants/") and relative not in files:
            stale.unlink()
    for relative in files:
        source, copy = ROOT / relative, workdir / relative
        try:
            if not copy.exists() or not filecmp.cmp(source, copy, shallow=False):
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy)
        except FileNotFoundError:
            continue  # gone since it was listed (a test run's scratch file)
    pyproject = workdir / "pyproject.toml"
    text = re.sub(
        r"(?ms)^only_mutate = \[.*?\]$",
        f"only_mutate = {_toml_list(group['modules'])}",
        pyproject.read_text(),
    )
    text = re.sub(
        r"(?m)^pytest_add_cli_args_test_selection = .*$",
        f"pytest_add_cli_args_test_selection = {_toml_list(group['tests'])}",
        text,
    )
    pyproject.write_text(text)
    drop_stale_copies(workdir, set(group["modules"]))
    return workdir


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def _mutant_workers(pid: int) -> list[int]:
    """The children of mutmut's process `pid` that test a mutant (mutmut titles them
    "mutmut: NAME"); not the servers its own test runs start."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                title = (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid and title.startswith(b"mutmut: "):
                found.append(int(entry.name))
    return found


def watch_idle_mutants(mutmut: subprocess.Popen[bytes]) -> None:
    """SIGXCPU to a mutant's process that has used no CPU for IDLE_LIMIT_S (Linux /proc only)."""
    last: dict[int, tuple[int, float]] = {}
    while mutmut.poll() is None:
        now = time.monotonic()
        running = _mutant_workers(mutmut.pid)
        for pid in running:
            ticks = _cpu_ticks(pid)
            seen = last.get(pid)
            if ticks is None:
                continue
            if seen is None or seen[0] != ticks:
                last[pid] = (ticks, now)
            elif now - seen[1] > IDLE_LIMIT_S:
                print(
                    f"\nmutant process {pid} idle for {IDLE_LIMIT_S:.0f} s: SIGXCPU (a timeout)", flush=True
                )
                try:
                    os.kill(pid, signal.SIGXCPU)
                except ProcessLookupError:
                    pass
                last[pid] = (ticks, now)
        last = {pid: seen for pid, seen in last.items() if pid in running}
        time.sleep(WATCH_EVERY_S)


def run_mutmut(workdir: Path, max_children: int, names: list[str]) -> None:
    # Keeps git from finding this repository above a group's copy: mutmut would read paths
    # relative to the wrong root; without git it compares file hashes instead.
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(SCRATCH), "PYTHONPATH": str(workdir)}
    mutmut = subprocess.Popen(
        [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names],
        cwd=workdir,
        env=env,
    )
    if Path("/proc").is_dir():
        threading.Thread(target=watch_idle_mutants, args=(mutmut,), daemon=True).start()
    try:
        mutmut.wait()
    except KeyboardInterrupt:
        mutmut.wait()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report", action="store_true", help="only report the last run")
    parser.add_argument(
        "--group",
        choices=sorted(groups()),
        help="only this group of bench/mutation_groups.toml (default: all of [tool.mutmut], hours)",
    )
    parser.add_argument(
        "--max-children",
        type=int,
        default=CHILDREN_PER_CORE * len(os.sched_getaffinity(0)),
        help="mutants tested at once (default: %(default)s)",
    )
    parser.add_argument(
        "names", nargs="*", help="run only these mutants again (globs allowed), e.g. after new tests"
    )
    args = parser.parse_args()
    workdir = (group_workdir(args.group) if not args.report else SCRATCH / args.group) if args.group else ROOT
    if not args.report:
        if not args.group:
            drop_stale_copies(workdir, mutated_modules())
        run_mutmut(workdir, args.max_children, args.names)
    return 0 if report(workdir) else 1


if __name__ == "__main__":
    sys.exit(main())
