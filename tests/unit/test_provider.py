"""Provider registration: the entry point, the connection type and form, hooks, triggers, links."""

from __future__ import annotations

import ast
import importlib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from airflow_fireworks import __version__
from airflow_fireworks.provider import FIELD_LABELS, get_provider_info


def test_entry_point_loads_get_provider_info():
    (entry,) = [
        ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_fireworks")
    ]
    info = entry.load()()
    assert info["package-name"] == "airflow-fireworks"
    assert info["versions"] == [__version__]


def test_every_listed_module_and_class_imports():
    info = get_provider_info()
    modules = [
        module
        for section in ("hooks", "operators", "sensors", "triggers")
        for item in info[section]
        for module in item["python-modules"]
    ]
    classes = [c["hook-class-name"] for c in info["connection-types"]] + info["extra-links"]
    for module in modules:
        importlib.import_module(module)
    for path in classes:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path


def test_connection_form_declares_fields_and_secret_is_the_password():
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == "fireworks"
    fields = conn_type["conn-fields"]
    assert set(fields) == {"inference_url", "hotload_url", "console_url", "additional_headers", "verify_ssl"}
    assert fields["console_url"]["schema"]["default"] == "https://app.fireworks.ai"
    behaviour = conn_type["ui-field-behaviour"]
    assert behaviour["relabeling"]["password"] == "API key"
    assert "login" in behaviour["hidden-fields"]
    # Port is shown (Airflow 3.3.2's Test button needs a stored port to match the one it sends).
    assert "port" not in behaviour["hidden-fields"]


def test_verify_tls_is_a_select_whose_off_state_is_an_explicit_choice():
    (conn_type,) = get_provider_info()["connection-types"]
    schema = conn_type["conn-fields"]["verify_ssl"]["schema"]
    assert schema["enum"] == [None, "true", "false"] and schema["default"] is None
    labels = schema["values_display"]
    assert labels["null"] == "Verify certificates (default)"
    assert "insecure" in labels["false"] and "Do not verify" in labels["false"]
    # The help text matches the code: unset means verified.
    assert "Unset: certificates are verified" in conn_type["conn-fields"]["verify_ssl"]["description"]


def test_field_labels_are_the_forms_labels():
    (conn_type,) = get_provider_info()["connection-types"]
    assert (
        FIELD_LABELS["host"] == conn_type["ui-field-behaviour"]["relabeling"]["host"] == "Control-plane URL"
    )
    assert FIELD_LABELS["password"] == "API key"
    for name, spec in conn_type["conn-fields"].items():
        assert FIELD_LABELS[name] == spec["label"]


def test_description_is_plain_text_for_the_providers_page():
    description = get_provider_info()["description"]
    assert not any(ch in description for ch in "`<>_") and "http" not in description


def test_package_metadata_names_a_documentation_url():
    from importlib.metadata import metadata

    urls = dict(entry.split(", ", 1) for entry in metadata("airflow-fireworks").get_all("Project-URL") or [])
    assert urls["Documentation"].startswith("https://")


@pytest.fixture(scope="module")
def providers_manager():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_providers_manager_registers_the_package(providers_manager):
    provider = providers_manager.providers["airflow-fireworks"]
    assert provider.version == __version__


def test_providers_manager_registers_connection_type_hook_and_form(providers_manager):
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook = ProvidersManagerTaskRuntime().hooks["fireworks"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_fireworks.hooks.fireworks.FireworksHook"
    assert hook.connection_id_attribute_name == "fireworks_conn_id"
    assert hook.hook_name == "Fireworks AI"
    widgets = providers_manager.connection_form_widgets
    assert widgets["extra__fireworks__console_url"].field["value"] == "https://app.fireworks.ai"
    assert providers_manager.field_behaviours["fireworks"]["relabeling"]["host"] == "Control-plane URL"


def test_providers_manager_lists_triggers_and_links(providers_manager):
    triggers = {t.trigger_class_name for t in providers_manager.trigger}
    assert "airflow_fireworks.triggers.deployment" in triggers
    assert "airflow_fireworks.links.FireworksDeploymentLink" in providers_manager.extra_links_class_names


def test_package_init_only_defines_the_version():
    import airflow_fireworks

    tree = ast.parse(Path(airflow_fireworks.__file__).read_text())
    assigned = [target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets]
    imports = [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert assigned == ["__version__"]
    assert imports == ["__future__"]
