"""Fixtures of the browser suite (``make test-browser``): a real api-server, the emulator behind a
``fireworks`` connection, a finished DAG run, and a logged-in headless Chromium per user.

Every test here is marked ``browser``; ``make test`` leaves them out and ``.ci/run`` runs them
through ``make test-browser``, which installs Debian's chromium and Selenium first. Screenshots go to
``$FIREWORKS_BROWSER_SCREENSHOTS`` (default: a fresh temporary folder), printed at the end of the run.

To add a page test: take ``browser`` (admin) or ``browser_as("viewer")``, ``airflow_ui`` for REST
set-up, ``emulator`` for the service (reset for each test), ``showcase_run`` for a finished run (on
an emulator of its own, ``showcase_emulator``), and call ``browser.screenshot(name)`` on each page.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.browser.harness import AirflowUI, Browser, DagRunJob
from tests.emulator_control import EmulatorProcess

BROWSER_DAGS = Path(__file__).resolve().parent / "dags"
SHOWCASE_DAG = "fireworks_ui_showcase"
SHOWCASE_DEPLOYMENT = "ui-showcase"
SHOWCASE_KEY = "fw-showcase-key-8e2f4a6c1d"
_SCREENSHOTS: list[Path] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``browser``."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the screenshots are."""
    if _SCREENSHOTS:
        terminalreporter.write_line(f"browser screenshots: {_SCREENSHOTS[0]}")


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """Where every page's screenshot is saved (printed at the start and the end of the run)."""
    configured = os.environ.get("FIREWORKS_BROWSER_SCREENSHOTS")
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="fireworks-browser-shots-"))
    path.mkdir(parents=True, exist_ok=True)
    _SCREENSHOTS.append(path)
    print(f"\nbrowser screenshots: {path}")
    return path


@pytest.fixture(scope="session")
def airflow_ui(
    emulator_process: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowUI]:
    """A real ``airflow api-server`` on its own home and database, with ``fireworks_default``
    pointing at the emulator (Port filled in, as the form asks for on Airflow 3.3.2)."""
    with AirflowUI.start(tmp_path_factory.mktemp("airflow-ui"), BROWSER_DAGS) as ui:
        ui.put_connection(
            "fireworks_default",
            conn_type="fireworks",
            host=emulator_process.url,
            port=int(emulator_process.url.rsplit(":", 1)[1]),
            password=emulator_process.api_key,
        )
        yield ui


@pytest.fixture(scope="session")
def showcase_emulator() -> Iterator[EmulatorProcess]:
    """An emulator of the showcase run's own, so tests resetting the shared one cannot disturb it."""
    with EmulatorProcess.start(api_key=SHOWCASE_KEY) as process:
        process.configure(create_delay_s=0.2)
        yield process


@pytest.fixture(scope="session", autouse=True)
def showcase_job(airflow_ui: AirflowUI, showcase_emulator: EmulatorProcess) -> Iterator[DagRunJob]:
    """The showcase DAG (create, sample, use_key), started with the session so that it runs while
    the first tests do; its ``fireworks_default`` (an environment connection, which wins over the
    database's) points at ``showcase_emulator``."""
    connection = {"conn_type": "fireworks", "host": showcase_emulator.url, "password": SHOWCASE_KEY}
    job = airflow_ui.start_dag_run(
        BROWSER_DAGS / f"{SHOWCASE_DAG}.py",
        SHOWCASE_DAG,
        env={"AIRFLOW_CONN_FIREWORKS_DEFAULT": json.dumps(connection)},
    )
    yield job
    job.stop()


@pytest.fixture(scope="session")
def showcase_run(showcase_job: DagRunJob) -> dict[str, str]:
    """The finished showcase run, ``{"run_id", "state"}``, visible in the UI."""
    run = showcase_job.result()
    assert run["state"] == "success", run
    return run


@pytest.fixture(scope="session")
def browser_as(airflow_ui: AirflowUI, screenshot_dir: Path) -> Iterator[Callable[[str], Browser]]:
    """``browser_as(user)``: a headless Chromium logged in as ``user`` (``admin`` or ``viewer``),
    one per user for the session."""
    browsers: dict[str, Browser] = {}

    def get(user: str) -> Browser:
        if user not in browsers:
            browser = Browser(airflow_ui.url, screenshot_dir)
            browsers[user] = browser
            browser.login(user)
        return browsers[user]

    yield get
    for browser in browsers.values():
        browser.close()


@pytest.fixture
def browser(browser_as: Callable[[str], Browser]) -> Browser:
    """Chromium logged in as ``admin``, on the UI's home page."""
    chromium = browser_as("admin")
    chromium.open("/")
    return chromium
