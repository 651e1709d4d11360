"""The ``fireworks`` connection in the UI: the form's fields, saving it, and the Test button."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.harness import AirflowUI, Browser
from tests.emulator_control import EmulatorProcess, free_port


def open_add_form(browser: Browser) -> None:
    """The Add Connection dialog with "Fireworks AI" chosen as the type."""
    from selenium.webdriver.common.keys import Keys

    browser.open("/connections")
    browser.click_text("Add Connection")
    combo = browser.find("[role=dialog] input[role=combobox]")
    combo.send_keys("Fireworks AI")
    browser.wait_text("Fireworks AI")
    combo.send_keys(Keys.ENTER)
    browser.wait_text("Standard Fields")


def field(browser: Browser, name: str) -> Any:
    """An input of the connection dialog by its form name (``host``, ``password``, ``port``)."""
    return browser.find(f"[role=dialog] [name='{name}']")


def press_test_button(browser: Browser, conn_id: str) -> str:
    """Press the Test button of ``conn_id``'s row; return the text of the toast it raises."""
    from selenium.webdriver.common.by import By

    browser.open("/connections")
    browser.wait_text(conn_id)
    row = browser.wait(
        lambda: next(
            r for r in browser.driver.find_elements(By.CSS_SELECTOR, "tr") if conn_id in r.text.split()
        ),
        f"row {conn_id}",
    )
    browser.record_toasts()
    row.find_element(By.CSS_SELECTOR, "button[aria-label='Test Connection']").click()
    return browser.wait_toast()


def dismiss_toasts(browser: Browser) -> None:
    """Close every toast so the next test reads its own."""
    from selenium.webdriver.common.by import By

    for button in browser.driver.find_elements(
        By.CSS_SELECTOR, "[data-scope=toast][data-part=close-trigger]"
    ):
        if button.is_displayed():
            button.click()


@pytest.fixture
def clean_connections(airflow_ui: AirflowUI) -> Any:
    """Connections a test creates are deleted afterwards (``fireworks_default`` stays)."""
    created: list[str] = []
    yield created
    for conn_id in created:
        airflow_ui.api("DELETE", f"connections/{conn_id}")


def test_the_form_shows_the_fireworks_fields_by_their_names(browser: Browser) -> None:
    open_add_form(browser)
    text = browser.wait_text("Control-plane URL")
    for label in ("Control-plane URL", "API key", "Port"):
        assert label in text
    assert "Login" not in text and "Schema" not in text
    assert field(browser, "host").get_attribute("placeholder") == "https://api.fireworks.ai"
    assert field(browser, "port").get_attribute("placeholder") == "443 (empty: the URL's port)"
    browser.screenshot("connection-form-standard-fields", show=field(browser, "host"))

    browser.click_text("Extra Fields")
    text = browser.wait_text("Verify TLS")
    for label in ("Inference URL", "Hotload URL", "Console URL", "Additional headers"):
        assert label in text
    assert "Verify certificates (default)" in text  # unset is shown as such, not as "off"
    assert "Unset: certificates are verified" in text
    browser.screenshot(
        "connection-form-verify-tls", show=browser.find("[role=dialog] [id='element_verify_ssl']")
    )


def test_a_connection_saved_from_the_form_passes_the_test_button(
    browser: Browser, airflow_ui: AirflowUI, emulator: EmulatorProcess, clean_connections: list[str]
) -> None:
    open_add_form(browser)
    field(browser, "connection_id").send_keys("fw_from_form")
    field(browser, "host").send_keys(emulator.url)
    field(browser, "password").send_keys(emulator.api_key)
    field(browser, "port").send_keys(emulator.url.rsplit(":", 1)[1])
    browser.screenshot("connection-form-filled", show=field(browser, "port"))
    clean_connections.append("fw_from_form")
    browser.click_text("Save")
    browser.wait(lambda: airflow_ui.api("GET", "connections/fw_from_form").ok, "the saved connection")

    saved = airflow_ui.api("GET", "connections/fw_from_form").json()
    assert saved["port"] == int(emulator.url.rsplit(":", 1)[1])
    # Verify TLS untouched: nothing (or null) stored, so certificates are verified.
    assert json.loads(saved["extra"] or "{}").get("verify_ssl") is None

    toast = press_test_button(browser, "fw_from_form")
    browser.screenshot("test-button-success")
    dismiss_toasts(browser)
    assert "Test Connection Successful" in toast
    assert f"Connected to Fireworks account 'emulator' at {emulator.url}" in toast
    assert emulator.api_key not in browser.page_source()


def test_a_wrong_key_is_reported_as_the_api_key_field(
    browser: Browser, airflow_ui: AirflowUI, emulator: EmulatorProcess, clean_connections: list[str]
) -> None:
    wrong_key = "fw-not-the-key-31415926"
    port = int(emulator.url.rsplit(":", 1)[1])
    clean_connections.append("fw_wrong_key")
    airflow_ui.put_connection(
        "fw_wrong_key", conn_type="fireworks", host=emulator.url, port=port, password=wrong_key
    )
    toast = press_test_button(browser, "fw_wrong_key")
    browser.screenshot("test-button-wrong-key")
    dismiss_toasts(browser)
    assert "Test Connection Failed" in toast
    assert f"API key refused by {emulator.url} (HTTP 401" in toast
    assert wrong_key not in toast and wrong_key not in browser.page_source()
    assert "field '" not in toast and "password" not in toast  # the form's words, not Airflow's


def test_an_unreachable_host_is_reported_as_the_control_plane_url(
    browser: Browser, airflow_ui: AirflowUI, clean_connections: list[str]
) -> None:
    port = free_port()  # nothing listens there
    clean_connections.append("fw_unreachable")
    airflow_ui.put_connection(
        "fw_unreachable", conn_type="fireworks", host="http://127.0.0.1", port=port, password="k" * 24
    )
    toast = press_test_button(browser, "fw_unreachable")
    browser.screenshot("test-button-unreachable")
    dismiss_toasts(browser)
    assert "Test Connection Failed" in toast
    assert f"Control-plane URL http://127.0.0.1:{port} cannot be reached: the connection was refused" in toast


def test_verify_tls_off_is_an_explicit_choice_the_test_button_reports(
    browser: Browser, airflow_ui: AirflowUI, emulator: EmulatorProcess, clean_connections: list[str]
) -> None:
    from selenium.webdriver.common.keys import Keys

    port = int(emulator.url.rsplit(":", 1)[1])
    clean_connections.append("fw_no_verify")
    airflow_ui.put_connection(
        "fw_no_verify", conn_type="fireworks", host=emulator.url, port=port, password=emulator.api_key
    )
    browser.open("/connections")
    browser.wait_text("fw_no_verify")
    browser.find("tr button[aria-label='Edit Connection']")  # rows are rendered
    rows = [r for r in browser.driver.find_elements("css selector", "tr") if "fw_no_verify" in r.text.split()]
    rows[0].find_element("css selector", "button[aria-label='Edit Connection']").click()
    browser.click_text("Extra Fields")
    select = browser.find("[role=dialog] [id='element_verify_ssl'] input[role=combobox]")
    select.send_keys("Do not verify")
    browser.wait_text("Do not verify certificates (insecure)")
    select.send_keys(Keys.ENTER)
    browser.screenshot("connection-form-verify-tls-off", show=select)
    browser.click_text("Save")
    browser.wait(
        lambda: (
            '"verify_ssl": "false"'
            in (airflow_ui.api("GET", "connections/fw_no_verify").json()["extra"] or "")
        ),
        "verify_ssl stored as false",
    )
    toast = press_test_button(browser, "fw_no_verify")
    browser.screenshot("test-button-verify-tls-off")
    dismiss_toasts(browser)
    assert "TLS certificates are NOT verified (Verify TLS is off)" in toast


def test_the_providers_page_links_the_documentation_and_reads_cleanly(browser: Browser) -> None:
    from importlib.metadata import metadata

    from selenium.webdriver.common.by import By

    docs = next(
        url.strip()
        for name, _, url in (
            e.partition(",") for e in metadata("airflow-fireworks").get_all("Project-URL") or []
        )
        if name.strip() == "Documentation"
    )
    browser.open("/providers")
    text = browser.wait_text("airflow-fireworks")
    browser.screenshot("providers-page", show=browser.find("a[aria-label='airflow-fireworks']"))
    link = browser.find("a[aria-label='airflow-fireworks']")
    assert link.get_attribute("href") == docs
    row = next(
        r for r in browser.driver.find_elements(By.CSS_SELECTOR, "tr") if "airflow-fireworks" in r.text
    )
    assert (
        "Fireworks AI training deployments: create, hotload, sample with token ids and logprobs" in row.text
    )
    assert "https://" not in row.text and text
