"""The Fireworks page in the Airflow UI (Browse > Fireworks): the list, a sampling chart, and the
scale-to-zero action with its confirmation, as an admin; no actions for a viewer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.browser.harness import AirflowUI, Browser
from tests.emulator_control import EmulatorProcess

DEPLOYMENT = "ui-plugin"
DAG_ID = "fireworks_plugin_page"
DAG_FILE = """
import datetime

from airflow.sdk import DAG

from airflow_fireworks.operators.deployment import FireworksCreateDeploymentOperator, FireworksHotloadOperator
from airflow_fireworks.operators.sampling import FireworksSampleOperator

MODEL = "accounts/fireworks/models/qwen3-8b"
FAST = {"poll_interval": 0.1, "timeout": 60, "deferrable": False}

with DAG("fireworks_plugin_page", schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False,
         params={"output_path": ""}):
    create = FireworksCreateDeploymentOperator(
        task_id="create", deployment_id="ui-plugin", base_model=MODEL, min_replica_count=1,
        max_replica_count=1, **FAST
    )
    hotload = FireworksHotloadOperator(
        task_id="hotload", deployment_id="ui-plugin", base_model=MODEL, snapshot_identity="step-7", **FAST
    )
    sample = FireworksSampleOperator(
        task_id="sample", deployment_id="ui-plugin",
        prompts=[{"prompt_token_ids": [1, 30 + i, 9]} for i in range(40)], n=2, max_tokens=32,
        concurrency={"initial_window": 2, "max_window": 16}, poll_interval=0.1,
        output_path="{{ params.output_path }}",
    )
    create >> hotload >> sample
"""


def deployment(emulator: EmulatorProcess) -> dict[str, Any]:
    """The deployment as the emulator reports it."""
    response = requests.get(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments/{DEPLOYMENT}",
        headers={"X-Api-Key": emulator.api_key},
        timeout=10,
    )
    response.raise_for_status()
    return dict(response.json())


@pytest.fixture(scope="module")
def plugin_run(
    airflow_ui: AirflowUI,
    emulator_process: EmulatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
    showcase_run: dict[str, str],
) -> dict[str, str]:
    """One finished run of a DAG that creates, hot-loads and samples to object storage (after the
    showcase run: two ``dag.test()`` processes would both write the DAGs folder's rows)."""
    emulator_process.configure(create_delay_s=0.2, hotload_stage_s=0.05, decode_step_base_s=0.004)
    folder = tmp_path_factory.mktemp("plugin-page-dag")
    (folder / f"{DAG_ID}.py").write_text(DAG_FILE)
    output = tmp_path_factory.mktemp("plugin-page-out")
    run = airflow_ui.run_dag(folder / f"{DAG_ID}.py", DAG_ID, {"output_path": f"file://{output}"})
    assert run["state"] == "success", run
    return run


@pytest.fixture
def fireworks_page(browser: Browser) -> Iterator[Browser]:
    """The admin's browser on the Fireworks page inside the UI (its iframe selected)."""
    browser.open("/plugin/fireworks")
    browser.driver.switch_to.frame(browser.find("iframe"))
    yield browser
    browser.driver.switch_to.default_content()


def row_text(browser: Browser, resource_id: str) -> str:
    """The text of the resource's row once it is listed."""
    return str(browser.find(f"tr[data-id='{resource_id}']").text)


def test_the_page_lists_the_deployment_with_its_run_snapshot_and_gpu_time(
    fireworks_page: Browser, plugin_run: dict[str, str]
):
    browser = fireworks_page
    text = row_text(browser, DEPLOYMENT)
    assert "READY" in text and "step-7" in text and DAG_ID in text and plugin_run["run_id"] in text
    assert "GPU-s" in text
    browser.screenshot("fireworks-page", show=browser.find(f"tr[data-id='{DEPLOYMENT}']"))

    browser.click_text("Chart")
    chart = browser.find("svg[data-chart='tokens_per_s'] polyline[data-series='tokens_per_s']")
    assert len(chart.get_attribute("points").split()) >= 2
    assert browser.find("svg[data-chart='window'] polyline[data-series='window']")
    assert plugin_run["run_id"] in browser.find("#chart-title").text
    browser.screenshot("fireworks-chart", show=browser.find("#charts"))


def test_scale_to_zero_asks_first_then_releases_the_replicas(
    fireworks_page: Browser, plugin_run: dict[str, str], emulator_process: EmulatorProcess
):
    browser = fireworks_page
    button = f"button[data-action='scale-to-zero'][data-id='{DEPLOYMENT}']"

    browser.find(button).click()
    dialog = browser.find("dialog#confirm")
    assert DEPLOYMENT in dialog.text and "zero replicas" in dialog.text
    browser.screenshot("fireworks-confirm-scale-to-zero")
    browser.find("#confirm-cancel").click()
    browser.wait(lambda: not dialog.is_displayed(), "the dialog to close")
    assert deployment(emulator_process).get("maxReplicaCount") == 1  # cancelled: nothing sent

    browser.find(button).click()
    browser.find("#confirm-ok").click()
    browser.wait_text(f"Deployment {DEPLOYMENT} scaled to zero.")
    state = deployment(emulator_process)
    assert state.get("maxReplicaCount", 0) == 0 and state.get("minReplicaCount", 0) == 0
    assert "max 0" in row_text(browser, DEPLOYMENT)
    assert not browser.driver.find_elements("css selector", button)  # nothing left to scale down
    browser.screenshot("fireworks-scaled-to-zero", show=browser.find(f"tr[data-id='{DEPLOYMENT}']"))


def test_a_viewer_gets_no_list_and_no_action(
    browser_as: Callable[[str], Browser], plugin_run: dict[str, str]
):
    browser = browser_as("viewer")
    browser.open("/fireworks/#conn=fireworks_default")
    alert = browser.find("[role=alert]")
    assert "403" in alert.text and "role does not allow" in alert.text
    assert not browser.driver.find_elements("css selector", "button[data-action]")
    browser.screenshot("fireworks-viewer")
