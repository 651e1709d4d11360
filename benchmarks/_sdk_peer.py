"""The official Fireworks SDK (fireworks-ai 1.2.30) as a peer measured in the same run.

It lives in its own virtual environment under ``.bench/sdk-venv`` (created on first use, reused
afterwards), never in the package's: the SDK's base requirements cannot be met here, so it is
installed with ``--no-deps`` plus the seven packages its sampler imports (fireworks-api.md
section 12). ``_sdk_runner.py`` runs inside it against the same emulator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".bench" / "sdk-venv"
RUNNER = Path(__file__).resolve().parent / "_sdk_runner.py"
SDK = "fireworks-ai==1.2.30"
SDK_IMPORTS = ("httpx", "urllib3", "pydantic", "anyio", "sniffio", "distro", "typing-extensions")
CHECK = "import fireworks.training.sdk.sampling, importlib.metadata as m; print(m.version('fireworks-ai'))"


def sdk_python() -> Path:
    """The SDK venv's interpreter, creating the venv first if needed (RuntimeError if impossible)."""
    python = VENV / "bin" / "python"
    if python.exists() and _version(python) == SDK.split("==")[1]:
        return python
    VENV.parent.mkdir(exist_ok=True)
    (VENV.parent / ".gitignore").write_text("*\n")
    print(f"  installing {SDK} into {VENV.relative_to(ROOT)} (once) ...", flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(python), "-m", "pip", "install", "-q", "--no-deps", SDK],
        [str(python), "-m", "pip", "install", "-q", *SDK_IMPORTS],
    ]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[-3:])} failed: {done.stderr.strip()[-500:]}")
    if _version(python) is None:
        raise RuntimeError("the SDK was installed but its sampler does not import")
    return python


def _version(python: Path) -> str | None:
    done = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def run_sdk(python: Path, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one job (see ``_sdk_runner.py``) in the SDK's venv; one result dict per step."""
    done = subprocess.run(
        [str(python), str(RUNNER)], input=json.dumps(job), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"SDK runner failed: {done.stderr.strip()[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
