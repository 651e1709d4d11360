"""``SamplingParams``: every sampling parameter declared, defaulted and checked once
(fireworks-api.md 6.2 and 6.3).

``DeploymentSampler.sample_with_tokens``, ``sample_prompts`` and ``FireworksSampleOperator`` only
build one; ``parse`` is the lenient form for rendered templates (numbers may be numeric strings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from types import MappingProxyType
from typing import Any

from airflow_fireworks.api.errors import FireworksValidationError
from airflow_fireworks.api.validation import check_int, check_number
from airflow_fireworks.sampling.completion import CompletionOptions

MAX_N = 128
MAX_STOP_SEQUENCES = 4
MAX_TOP_K = 100
MAX_TOP_LOGPROBS = 5
MAX_TEMPERATURE = 2.0
#: Body fields the sampler always sets itself.
RESERVED_FIELDS = frozenset({"model", "prompt", "n", "stream", "perf_metrics_in_response", "raw_output"})
#: Keyword arguments of the Fireworks SDK that are ``DeploymentSampler`` constructor settings here.
RENAMED_KWARGS = {
    "http_timeout": "http_timeout_s",
    "hotload_max_retries": "not_ready_retries",
    "hotload_retry_interval": "not_ready_interval_s",
}
#: Optional integer parameters and their bounds (None: no upper bound).
_OPTIONAL_INTS = (
    ("top_k", 0, MAX_TOP_K),
    ("seed", 0, None),
    ("top_logprobs", 0, MAX_TOP_LOGPROBS),
    ("max_seq_len", 1, None),
)
_NUMERIC = frozenset(
    {"n", "max_tokens", "temperature", "top_p", "top_k", "seed", "top_logprobs", "max_seq_len"}
)


def parse_number(value: Any) -> Any:
    """A rendered template's numeric string as a number (``"56"`` -> 56, ``"0.5"`` -> 0.5); any
    other value unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _stop(value: Any) -> str | tuple[str, ...] | tuple[int, ...] | None:
    if value is None or (isinstance(value, str) and value):
        return value
    if (
        isinstance(value, list | tuple)
        and 0 < len(value) <= MAX_STOP_SEQUENCES
        and (all(isinstance(v, str) and v for v in value) or all(type(v) is int and v >= 0 for v in value))
    ):
        return tuple(value)
    raise FireworksValidationError(
        "stop",
        f"must be a string or a list of at most {MAX_STOP_SEQUENCES} non-empty strings (or token ids, "
        f"not mixed), got {value!r}",
    )


@dataclass(frozen=True)
class SamplingParams:
    """The sampling parameters of one request set, checked when built (``FireworksValidationError``
    names the field).

    ``top_p`` / ``top_k`` None leave the server default (1.0 / 0, disabled). ``stop`` is a string
    or up to four strings or token ids (the sampler decodes ids with its tokenizer). With ``seed``,
    sample ``i`` of a prompt uses ``seed + i``. ``max_seq_len`` skips prompts of that many tokens or
    more and drops completions whose prompt plus completion is longer. ``extra`` holds other
    request-body fields, sent as given (``echo_last``, ``prompt_cache_key``, ``ignore_eos``, ...).
    """

    n: int = 1
    max_tokens: int = 1024
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    stop: str | Sequence[str] | Sequence[int] | None = None  # normalised to a tuple
    seed: int | None = None
    logprobs: bool | int = False
    top_logprobs: int | None = None
    echo: bool = False
    max_seq_len: int | None = None
    include_routing_matrix: bool = False
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        check_int(self.n, "n", 1, MAX_N)
        check_int(self.max_tokens, "max_tokens", 0)
        for name, low, high in _OPTIONAL_INTS:
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, low, high)
        normalise = partial(object.__setattr__, self)
        normalise("temperature", check_number(self.temperature, "temperature", 0.0, MAX_TEMPERATURE))
        if self.top_p is not None:
            normalise("top_p", check_number(self.top_p, "top_p", 0.0, 1.0, low_open=True))
        normalise("stop", _stop(self.stop))
        normalise("extra", MappingProxyType(self._checked_extra()))
        if not isinstance(self.logprobs, bool) and not (
            type(self.logprobs) is int and 0 <= self.logprobs <= MAX_TOP_LOGPROBS
        ):
            raise FireworksValidationError(
                "logprobs", f"must be true or false (or a legacy int 0-5), got {self.logprobs!r}"
            )
        for name in ("echo", "include_routing_matrix"):
            if not isinstance(getattr(self, name), bool):
                raise FireworksValidationError(name, f"must be true or false, got {getattr(self, name)!r}")
        if self.top_logprobs and not self.logprobs:
            raise FireworksValidationError("top_logprobs", "needs logprobs=True")
        if self.max_tokens == 0 and not self.echo and self.extra.get("echo_last") is None:
            raise FireworksValidationError(
                "max_tokens", "must be >= 1 (0 only makes sense with echo=True, to score prompts)"
            )

    def _checked_extra(self) -> dict[str, Any]:
        if not isinstance(self.extra, Mapping):
            raise FireworksValidationError("extra", "must be a mapping of request-body fields")
        for name in self.extra:
            if name in RESERVED_FIELDS:
                raise FireworksValidationError(name, "is set by the sampler; remove it")
            if name in RENAMED_KWARGS:
                raise FireworksValidationError(
                    name, f"is a DeploymentSampler setting: pass {RENAMED_KWARGS[name]}= to the constructor"
                )
        if self.extra.get("echo_last") is not None:
            check_int(self.extra["echo_last"], "echo_last", 0)
        try:
            json.dumps(dict(self.extra))
        except (TypeError, ValueError) as exc:
            raise FireworksValidationError("extra", f"arguments must be JSON-serialisable ({exc})") from None
        return dict(self.extra)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SamplingParams:
        """The parameters from SDK-style keyword arguments: unknown names go to ``extra``."""
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in kwargs.items() if k in known},
            extra={k: v for k, v in kwargs.items() if k not in known},
        )

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> SamplingParams:
        """Like the constructor, but numbers may be numeric strings (what a rendered template
        gives); parameters not in ``values`` take their defaults."""
        return cls(**{k: parse_number(v) if k in _NUMERIC else v for k, v in values.items()})

    @property
    def options(self) -> CompletionOptions:
        """What shapes how a completion's stream is read back."""
        return CompletionOptions(
            logprobs=bool(self.logprobs),
            echo=self.echo,
            echo_last=self.extra.get("echo_last"),
            include_routing_matrix=self.include_routing_matrix,
        )

    def body_fields(self) -> dict[str, Any]:
        """The request-body fields these parameters set (fireworks-api.md 6.2): ``top_p`` 1.0 and
        ``top_k`` 0 unless given, optional fields only when set, then ``extra``. ``stop`` is a list
        (token ids still to be decoded); ``seed`` is per sample, so not here."""
        body: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "top_k": 0 if self.top_k is None else self.top_k,
        }
        if self.logprobs:
            body["logprobs"] = self.logprobs
        if self.top_logprobs is not None:
            body["top_logprobs"] = self.top_logprobs
        if self.echo:
            body["echo"] = True
        if self.stop is not None:
            body["stop"] = list(self._stop_items())
        if self.include_routing_matrix:
            body["include_routing_matrix"] = True
        body.update(self.extra)
        return body

    def _stop_items(self) -> tuple[str | int, ...]:
        stop = self.stop
        return (stop,) if isinstance(stop, str) else tuple(stop or ())

    @property
    def has_stop_token_ids(self) -> bool:
        """True when ``stop`` holds token ids (to be decoded with a tokenizer)."""
        return any(type(item) is int for item in self._stop_items())

    def as_record(self) -> dict[str, Any]:
        """The parameters as JSON-ready values, for a manifest: the named parameters always,
        ``include_routing_matrix`` and ``extra`` only when set."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _WHEN_SET}
        if isinstance(self.stop, tuple):
            record["stop"] = list(self.stop)
        if self.include_routing_matrix:
            record["include_routing_matrix"] = True
        if self.extra:
            record["extra"] = dict(self.extra)
        return record


_WHEN_SET = frozenset({"include_routing_matrix", "extra"})
#: The named parameters every entry point takes (all but ``include_routing_matrix`` and ``extra``).
PARAMETER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SamplingParams) if f.name not in _WHEN_SET)
