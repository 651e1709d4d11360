"""The parameters of ``FireworksSampleOperator`` after rendering: each checked and normalised
(``FireworksValidationError`` names the field; numbers may be numeric strings, which is what a
rendered template gives), and the checks across them. The sampling parameters are checked by
``SamplingParams``, the concurrency setting by ``sampling.run.concurrency_spec``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_fireworks.api import FireworksValidationError, validate_base_model, validate_deployment_id
from airflow_fireworks.api.validation import check_bool, check_int, check_number, is_inference_model
from airflow_fireworks.sampling.params import PARAMETER_NAMES, SamplingParams
from airflow_fireworks.sampling.run import concurrency_spec


def _model(value: Any, name: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not is_inference_model(text):
        raise FireworksValidationError(
            name,
            f"{value!r} is not an inference model name; use 'accounts/<account>/deployments/<deployment>' "
            "(or pass deployment_id and let the account be resolved)",
        )
    return text


def named_deployment(model: str) -> tuple[str, str] | None:
    """``(account, deployment id)`` of an ``accounts/<a>/deployments/<id>`` model name; None for
    the ``<model>#<deployment>`` form."""
    parts = model.split("/")
    if "#" in model or len(parts) != 4 or parts[0] != "accounts" or parts[2] != "deployments":
        return None
    return parts[1], parts[3]


def _storage_path(value: Any, name: str) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` from a URI, an absolute local path, or an ``ObjectStoragePath``."""
    if isinstance(value, ObjectStoragePath):
        path = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if "://" not in text:
            if not text.startswith("/"):
                raise FireworksValidationError(
                    name,
                    f"{value!r} is a relative path; use a URI such as 'file:///data/x' or 's3://bucket/x'",
                )
            text = "file://" + text
        path = ObjectStoragePath(text)
    else:
        raise FireworksValidationError(
            name, f"must be an ObjectStoragePath or a URI such as 'file:///data/x', got {value!r}"
        )
    if not path.protocol:
        return ObjectStoragePath("file://" + path.path)
    return path


def _tokenizer_name(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise FireworksValidationError(name, "must be a Hugging Face model id or a local tokenizer directory")
    return value.strip()


def _optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    return lambda value, name: None if value is None else check(value, name)


#: How each parameter other than the sampling parameters is checked and normalised.
_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "deployment_id": _optional(validate_deployment_id),
    "model": _optional(_model),
    "tokenizer": _tokenizer_name,
    "prompts_path": _optional(_storage_path),
    "output_path": _optional(_storage_path),
    "shard_index": lambda v, k: check_int(v, k, 0, parse_str=True),
    "num_shards": lambda v, k: check_int(v, k, 1, parse_str=True),
    "concurrency": lambda v, k: concurrency_spec(v),
    "overwrite": check_bool,
    "max_xcom_completions": lambda v, k: check_int(v, k, 0, parse_str=True),
    "max_failed_prompt_fraction": lambda v, k: check_number(v, k, 0, 1, parse_str=True),
    "progress_interval_s": lambda v, k: check_number(v, k, 0, math.inf, low_open=True, parse_str=True),
    "not_ready_retries": lambda v, k: check_int(v, k, 0, parse_str=True),
    "not_ready_interval_s": lambda v, k: check_number(v, k, 0, math.inf, parse_str=True),
    "base_model": _optional(validate_base_model),
    "require_stable_identity": check_bool,
}


@dataclass(frozen=True)
class SampleSettings:
    """The operator's parameters after rendering, checked and normalised."""

    deployment_id: str | None
    model: str | None
    tokenizer: str | None
    prompts_path: ObjectStoragePath | None
    output_path: ObjectStoragePath | None
    shard_index: int
    num_shards: int
    sampling: SamplingParams
    concurrency: dict[str, Any]
    overwrite: bool
    max_xcom_completions: int
    max_failed_prompt_fraction: float
    progress_interval_s: float
    not_ready_retries: int
    not_ready_interval_s: float
    base_model: str | None
    require_stable_identity: bool


#: The operator parameters a ``SampleSettings`` is built from.
PARAMETERS: tuple[str, ...] = (*_CHECKS, *PARAMETER_NAMES)


def check_parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (parameters by name: all of ``PARAMETERS``, or at DAG parse time those already
    final) checked and normalised, by ``SampleSettings`` field; a check across parameters runs
    when all it needs is known. ``SampleSettings(**check_parameters(all_values))`` is the result
    after rendering."""
    s = {name: check(values[name], name) for name, check in _CHECKS.items() if name in values}
    s["sampling"] = SamplingParams.parse({name: values[name] for name in PARAMETER_NAMES if name in values})
    if s.get("require_stable_identity") and "base_model" in s and s["base_model"] is None:
        raise FireworksValidationError(
            "require_stable_identity",
            "needs base_model (the deployment's base model, e.g. 'accounts/fireworks/models/qwen3-8b'): "
            "the served identity is read from the deployment's hotload status",
        )
    if s.get("base_model") is not None and s.get("model") and named_deployment(s["model"]) is None:
        raise FireworksValidationError(
            "base_model",
            "reading the served identity needs the deployment: give deployment_id, or model as "
            "'accounts/<account>/deployments/<deployment>'",
        )
    if "shard_index" in s and "num_shards" in s and s["shard_index"] >= s["num_shards"]:
        raise FireworksValidationError(
            "shard_index", f"must be in [0, num_shards={s['num_shards']}), got {s['shard_index']}"
        )
    return s
