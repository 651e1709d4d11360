"""Check that the running interpreter has the lowest Airflow that pyproject.toml claims.

``make test-versions`` runs this in ``.venv-lowest`` before the suites, so the version the suites
prove and the lower bound users are promised cannot drift apart.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def airflow_floor() -> Version:
    """The ``>=`` bound of the ``apache-airflow`` dependency in pyproject.toml."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    for line in dependencies:
        requirement = Requirement(line)
        if requirement.name == "apache-airflow":
            floors = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
            if len(floors) == 1:
                return floors[0]
            raise SystemExit(f"pyproject.toml: {line!r} needs exactly one '>=' bound")
    raise SystemExit("pyproject.toml declares no apache-airflow dependency")


def main() -> None:
    """Exit non-zero unless the installed Airflow is the claimed lower bound."""
    floor = airflow_floor()
    installed = Version(version("apache-airflow"))
    if installed != floor:
        sys.exit(
            f"apache-airflow {installed} is installed but pyproject.toml claims >={floor}: "
            f"make the pin in ci/constraints-airflow-*.txt and the Makefile's AIRFLOW_LOWEST agree "
            f"with the lower bound"
        )
    print(f"apache-airflow {installed} = the lower bound pyproject.toml claims (>={floor})")


if __name__ == "__main__":
    main()
