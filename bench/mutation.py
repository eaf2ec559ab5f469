"""Mutation score of the engine and the worker's guarantees: how much of the code, changed by one
token, the test suite notices.

    ./dev mutation                      # installs mutmut, runs it, prints the score and every survivor
    python -m bench.mutation --report   # only the report of the last run (mutants/ is kept)

mutmut (configured in pyproject.toml, [tool.mutmut]) copies the code to `mutants/`, makes one
mutant per changed operator, constant or argument, and runs, per mutant, only the tests that
cover the mutated function (it measures that first), stopping at the first failure. A mutant is
killed when a test fails, survives when every covering test passes. The equivalent mutants
(changes no caller can observe, such as a codec name's letter case) are listed with their reason
in bench/mutation_equivalents.txt and left out of the score. Slow: not part of CI; the last
result is in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
EQUIVALENTS = ROOT / "bench" / "mutation_equivalents.txt"
TARGET_KILLED = 0.85

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


def scores() -> dict[str, ModuleScore]:
    by_module: dict[str, ModuleScore] = defaultdict(ModuleScore)
    equivalent = equivalents()
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        module = meta.relative_to(MUTANTS).as_posix().removesuffix(".meta")
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


def report() -> bool:
    """Print the score by module and the survivors; True when the target is met."""
    by_module = scores()
    if not by_module:
        print("no mutmut results in mutants/: run `./dev mutation` first", file=sys.stderr)
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
    met = total.score >= TARGET_KILLED
    verdict = "met" if met else "MISSED"
    print(f"\nkilled {total.score:.1%} of non-equivalent mutants; target {TARGET_KILLED:.0%}: {verdict}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report", action="store_true", help="only report the last run")
    args = parser.parse_args()
    if not args.report:
        # mutmut reads its configuration from pyproject.toml in the working directory.
        subprocess.run([sys.executable, "-m", "mutmut", "run"], cwd=ROOT, check=False)
    return 0 if report() else 1


if __name__ == "__main__":
    sys.exit(main())
