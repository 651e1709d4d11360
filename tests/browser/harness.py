"""A real Airflow api-server and a headless Chromium driving its UI, for the browser suite.

``AirflowUI`` migrates a fresh SQLite database in its own AIRFLOW_HOME and runs ``airflow
api-server`` (one worker, a free loopback port) with the simple auth manager and known users
(``admin``: admin role, ``viewer``: viewer role). It is stopped by PID. ``run_dag`` runs a DAG file
with ``dag.test()`` in a child process sharing that database, so its runs, XComs (extra links) and
rendered fields show in the UI without a scheduler. ``Browser`` wraps Selenium around Debian's
``chromium`` and ``chromium-driver`` (no browser download) and saves a screenshot of each page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from airflow_fireworks.testing import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
USERS = {"admin": "admin", "viewer": "viewer"}
#: Passwords the simple auth manager keeps (it only generates passwords for users missing here).
PASSWORDS = {"admin": "admin-pass-7c1e", "viewer": "viewer-pass-2b9d"}
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

_RUN_DAG = """
import json, sys
from tests.airflow_helpers import run_dag_file
run = run_dag_file(sys.argv[1], sys.argv[2], conf=json.loads(sys.argv[3]))
print("RUN_RESULT " + json.dumps({"run_id": run.run_id, "state": str(run.state)}))
"""


@dataclass
class AirflowUI:
    """A running ``airflow api-server`` and the means to set it up through its REST API."""

    home: Path
    env: dict[str, str]
    url: str
    process: subprocess.Popen[bytes] | None = None
    _tokens: dict[str, str] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)

    @classmethod
    @contextmanager
    def start(
        cls, home: Path, dags_folder: Path, extra_env: dict[str, str] | None = None
    ) -> Iterator[AirflowUI]:
        """Migrate a database in ``home`` and serve the UI until the context exits."""
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        (home / "passwords.json").write_text(json.dumps(PASSWORDS))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
                "TRANSFORMERS_VERBOSITY": "error",
                "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": str(REPO_ROOT),
            }
        )
        env.update(extra_env or {})
        ui = cls(home=home, env=env, url=url)
        ui.cli("db", "migrate")
        log = open(home / "api-server.log", "wb")  # noqa: SIM115 - closed with the process
        ui.process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            ui.wait_healthy()
            yield ui
        finally:
            ui.stop()
            log.close()

    def cli(self, *args: str, timeout: float = 300) -> str:
        """Run an ``airflow`` CLI command against this home; return its stdout."""
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def wait_healthy(self, timeout_s: float = 120) -> None:
        """Block until the api-server answers its health check, or fail if it died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"api-server exited with {self.process.returncode}; see {self.home}")
            try:
                if self.session.get(f"{self.url}/api/v2/monitor/health", timeout=5).ok:
                    return
            except requests.RequestException:  # not listening yet, or busy starting up
                pass
            time.sleep(0.3)
        raise TimeoutError(f"api-server not healthy after {timeout_s}s; see {self.home}/api-server.log")

    def stop(self) -> None:
        """Stop the api-server (its whole process group) by PID."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def token(self, user: str = "admin") -> str:
        """A JWT for ``user`` from the simple auth manager."""
        if user not in self._tokens:
            response = self.session.post(
                f"{self.url}/auth/token",
                json={"username": user, "password": PASSWORDS[user]},
                timeout=10,
            )
            response.raise_for_status()
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, *, user: str = "admin", **kwargs: Any) -> requests.Response:
        """Call the public REST API (``/api/v2/...``) as ``user``."""
        headers = {"Authorization": f"Bearer {self.token(user)}"}
        return self.session.request(
            method, f"{self.url}/api/v2/{path}", headers=headers, timeout=30, **kwargs
        )

    def put_connection(self, conn_id: str, **fields: Any) -> None:
        """Create or replace a connection in the metadata database (``conn_type``, ``host``, ...)."""
        self.api("DELETE", f"connections/{conn_id}")
        response = self.api("POST", "connections", json={"connection_id": conn_id, **fields})
        response.raise_for_status()

    def start_dag_run(
        self,
        dag_file: Path,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> DagRunJob:
        """Start ``dag_id`` of ``dag_file`` with ``dag.test()`` in a child process on this database
        (``env`` added to its environment, e.g. an ``AIRFLOW_CONN_*`` of its own); it runs while
        the caller goes on."""
        output = self.home / f"dag-test-{dag_id}-{time.monotonic_ns()}.log"
        with open(output, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", _RUN_DAG, str(dag_file), dag_id, json.dumps(conf or {})],
                env={**self.env, **(env or {})},
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return DagRunJob(dag_id, process, output)

    def run_dag(self, dag_file: Path, dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, str]:
        """Run ``dag_id`` of ``dag_file`` with ``dag.test()`` on this database; return its
        ``{"run_id", "state"}``."""
        return self.start_dag_run(dag_file, dag_id, conf).result()


@dataclass
class DagRunJob:
    """A ``dag.test()`` child process started by ``AirflowUI.start_dag_run``."""

    dag_id: str
    process: subprocess.Popen[bytes]
    output: Path

    def result(self, timeout_s: float = 300) -> dict[str, str]:
        """Wait for the run; return ``{"run_id", "state"}`` (raises with its output if it broke)."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        text = self.output.read_text(errors="replace")
        match = re.search(r"^RUN_RESULT (.*)$", text, re.MULTILINE)
        if self.process.returncode != 0 or match is None:
            raise RuntimeError(f"dag.test() of {self.dag_id} failed (see {self.output}):\n{text[-4000:]}")
        return dict(json.loads(match.group(1)))

    def stop(self) -> None:
        """Kill the run's process group if it still runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Browser:
    """Headless Chromium (Debian's packages) driven by Selenium, with a screenshot per page."""

    def __init__(self, base_url: str, screenshots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        for binary in (CHROMIUM, CHROMEDRIVER):
            if not Path(binary).exists():
                raise RuntimeError(f"{binary} is missing: run `make test-browser` (installs chromium)")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
            options.add_argument(arg)
        options.add_argument("--disable-gpu")
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.implicitly_wait(0)
        self.base_url = base_url
        self.screenshots = screenshots
        self.screenshots.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Quit the browser and its driver."""
        self.driver.quit()

    def open(self, path: str) -> None:
        """Load ``path`` of the UI (e.g. ``/connections``)."""
        self.driver.get(self.base_url + path)

    def wait(self, predicate: Callable[[], Any], what: str, timeout_s: float = 20) -> Any:
        """Poll ``predicate`` until it returns something truthy; fail naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except Exception as err:  # a stale or missing element while React re-renders
                last_error = err
                value = None
            if value:
                return value
            time.sleep(0.2)
        shot = self.screenshot(f"timeout-{re.sub(r'[^a-z0-9]+', '-', what.lower())[:40]}")
        raise AssertionError(f"timed out waiting for {what} (screenshot {shot}); last error: {last_error}")

    def text(self) -> str:
        """The visible text of the page."""
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def wait_text(self, needle: str, timeout_s: float = 20) -> str:
        """Wait until ``needle`` is visible on the page; return the page text."""
        return str(self.wait(lambda: (t := self.text()) and needle in t and t, f"text {needle!r}", timeout_s))

    def find(self, css: str, timeout_s: float = 20) -> Any:
        """The first element matching ``css`` once it is displayed."""
        from selenium.webdriver.common.by import By

        def visible() -> Any:
            for element in self.driver.find_elements(By.CSS_SELECTOR, css):
                if element.is_displayed():
                    return element
            return None

        return self.wait(visible, f"element {css}", timeout_s)

    def click_text(self, label: str, tag: str = "button", timeout_s: float = 20) -> None:
        """Click the first displayed ``tag`` whose text is ``label``."""
        from selenium.webdriver.common.by import By

        def element() -> Any:
            for candidate in self.driver.find_elements(
                By.XPATH, f"//{tag}[normalize-space()={json.dumps(label)}]"
            ):
                if candidate.is_displayed() and candidate.is_enabled():
                    return candidate
            return None

        self.wait(element, f"{tag} {label!r}", timeout_s).click()

    def screenshot(self, name: str, show: Any = None) -> Path:
        """Save the viewport as ``<screenshots>/<name>.png`` (scrolled so that the element ``show``
        is in the middle, when given); return the path."""
        if show is not None:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", show)
            time.sleep(0.3)
        path = self.screenshots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def login(self, user: str) -> None:
        """Sign in through the simple auth manager's login page."""
        self.open("/auth/login")
        self.find("input[name='username']").send_keys(user)
        self.find("input[name='password']").send_keys(PASSWORDS[user])
        self.click_text("Sign in")
        self.wait(lambda: "/auth/login" not in self.driver.current_url, f"login of {user}")

    def record_toasts(self) -> None:
        """Start keeping the text of every toast the page shows (they vanish after a few seconds);
        call after ``open``, before the action that raises one, then ``wait_toast``."""
        self.driver.execute_script(
            """
            window.__toasts = [];
            const keep = () => {
                for (const e of document.querySelectorAll("[data-scope=toast][data-part=root]")) {
                    const text = e.innerText;
                    if (text && !window.__toasts.includes(text)) window.__toasts.push(text);
                }
            };
            new MutationObserver(keep).observe(
                document.body, {childList: true, subtree: true, characterData: true}
            );
            """
        )

    def wait_toast(self, timeout_s: float = 30) -> str:
        """The text of the first toast shown since ``record_toasts``."""
        return str(
            self.wait(
                lambda: (self.driver.execute_script("return window.__toasts") or [None])[0],
                "a toast",
                timeout_s,
            )
        )

    def page_source(self) -> str:
        """The current DOM as HTML."""
        return str(self.driver.page_source)


def apt_has_chromium() -> bool:
    """True when Debian's chromium and its driver are installed."""
    return shutil.which("chromium") is not None and Path(CHROMEDRIVER).exists()
