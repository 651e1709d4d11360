"""What a DAG author sees of a finished run: the deployment link and the rendered fields."""

from __future__ import annotations

import re
from urllib.parse import quote

from tests.browser.conftest import SHOWCASE_DAG, SHOWCASE_DEPLOYMENT
from tests.browser.harness import Browser
from tests.emulator_control import EmulatorProcess


def task_path(run: dict[str, str], task_id: str, tab: str = "") -> str:
    """The UI path of a task instance of ``run`` (and one of its tabs)."""
    path = f"/dags/{SHOWCASE_DAG}/runs/{quote(run['run_id'], safe='')}/tasks/{task_id}"
    return f"{path}/{tab}" if tab else path


def rendered_value(page_text: str, name: str) -> str:
    """The first line of a rendered field's value on the Rendered Templates tab (its editor shows
    the line number "1" before it)."""
    lines = page_text.splitlines()
    start = lines.index(name) + 1
    return lines[start + 1] if lines[start] == "1" else lines[start]


def test_the_create_task_links_to_the_deployment_in_the_console(
    browser: Browser, showcase_run: dict[str, str]
) -> None:
    browser.open(task_path(showcase_run, "create", "details"))
    browser.wait_text("Extra Links")
    link = browser.find("a[href*='/dashboard/deployments/']")
    browser.screenshot("task-extra-link", show=link)
    assert (
        link.get_attribute("href") == f"https://app.fireworks.ai/dashboard/deployments/{SHOWCASE_DEPLOYMENT}"
    )
    assert link.text.strip() == "Fireworks deployment"


def test_rendered_fields_show_the_tokenizer_and_mask_the_key(
    browser: Browser, showcase_run: dict[str, str], showcase_emulator: EmulatorProcess
) -> None:
    browser.open(task_path(showcase_run, "sample", "rendered_templates"))
    text = browser.wait_text("vocab")
    browser.screenshot("rendered-fields-sample", show=browser.find("td, pre"))
    assert rendered_value(text, "vocab").endswith("airflow_fireworks/tokenizer_data")  # not "***"
    assert rendered_value(browser.wait_text("max_toks"), "max_toks") == "8"
    assert showcase_emulator.api_key not in browser.page_source()

    browser.open(task_path(showcase_run, "use_key", "rendered_templates"))
    text = browser.wait_text("FIREWORKS_API_KEY")
    browser.screenshot("rendered-fields-key-masked", show=browser.find("td, pre"))
    assert '"FIREWORKS_API_KEY":"***"' in re.sub(r"\s+", "", text)  # masked by Airflow, as before
    assert showcase_emulator.api_key not in browser.page_source()
