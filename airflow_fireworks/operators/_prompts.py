"""The prompts of ``FireworksSampleOperator``: records from a list or a JSON Lines file, checked
and turned into ``PromptSpec`` s, and the lazy view of one shard's prompts.

A prompt record is a string (one user message), a list of chat messages, or an object with
``messages`` or ``prompt_token_ids`` and an optional ``metadata`` object. Every shard reads and
checks the whole set (so every shard reports the same errors) and digests it, so that a retry can
tell whether its inputs changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_fireworks.api import FireworksValidationError
from airflow_fireworks.sampling import PromptSpec
from airflow_fireworks.sampling.sampler import check_prompt_ids
from airflow_fireworks.sampling.tokenization import validate_messages

#: The keys a prompt object may have.
_PROMPT_KEYS = frozenset({"messages", "prompt_token_ids", "metadata"})


def check_prompt_list(prompts: Any) -> None:
    """Refuse a ``prompts`` value that is not a list of prompts (e.g. a list rendered into a string)."""
    if isinstance(prompts, str):
        raise FireworksValidationError(
            "prompts",
            "is a string, not a list: wrap a single prompt in a list, pass the upstream task's output "
            "(prompts=make_prompts()) rather than a Jinja string, or set "
            "render_template_as_native_obj=True",
        )
    if not isinstance(prompts, list | tuple):
        raise FireworksValidationError("prompts", f"must be a list of prompts, got {type(prompts).__name__}")


def _prompt_spec(record: Any, index: int) -> PromptSpec:
    """A ``PromptSpec`` from one prompt record; ``ValueError`` says what is wrong with it."""
    try:
        if isinstance(record, str):
            if not record.strip():
                raise ValueError("is an empty string")
            return PromptSpec(index, messages=[{"role": "user", "content": record}])
        if isinstance(record, list | tuple):
            validate_messages(record)
            return PromptSpec(index, messages=list(record))
        if isinstance(record, Mapping):
            unknown = sorted(str(k) for k in set(record) - _PROMPT_KEYS)
            if unknown:
                hint = (
                    "a single chat message must be inside a list: [{'role': ..., 'content': ...}]"
                    if "role" in record
                    else "put other fields under 'metadata'"
                )
                raise ValueError(
                    f"has unknown key(s) {unknown}; a prompt object has 'messages' or 'prompt_token_ids' "
                    f"and an optional 'metadata' object ({hint})"
                )
            if ("messages" in record) == ("prompt_token_ids" in record):
                raise ValueError("needs exactly one of 'messages' or 'prompt_token_ids'")
            metadata = record.get("metadata")
            if metadata is not None and not isinstance(metadata, Mapping):
                raise ValueError(f"'metadata' must be an object, got {type(metadata).__name__}")
            meta = dict(metadata) if metadata else None
            if "messages" in record:
                validate_messages(record["messages"])
                return PromptSpec(index, messages=list(record["messages"]), metadata=meta)
            ids = check_prompt_ids(record["prompt_token_ids"])
            return PromptSpec(index, prompt_token_ids=ids, metadata=meta)
    except FireworksValidationError as err:
        raise ValueError(str(err)) from None
    raise ValueError(
        f"is a {type(record).__name__}; a prompt is a string, a list of chat messages, or an object "
        "with 'messages' or 'prompt_token_ids'"
    )


class PromptSet:
    """A prompt source read record by record: an in-memory list or a JSON Lines file."""

    def __init__(
        self,
        field_name: str,
        source: str,
        records: Callable[[], Iterator[tuple[int, str, Any]]],
        decode: Callable[[Any], Any],
    ) -> None:
        self.field = field_name
        self.source = source
        self.records = records
        self._decode = decode
        self.total = 0
        self.digest = ""
        self.needs_tokenizer = False

    @classmethod
    def from_list(cls, prompts: Sequence[Any]) -> PromptSet:
        def records() -> Iterator[tuple[int, str, Any]]:
            for index, record in enumerate(prompts):
                yield index, f"item {index}", record

        return cls("prompts", "prompts", records, lambda record: record)

    @classmethod
    def from_jsonl(cls, path: ObjectStoragePath) -> PromptSet:
        def records() -> Iterator[tuple[int, str, Any]]:
            index = 0
            with path.open("rb") as fp:
                for number, line in enumerate(fp, start=1):
                    if line.strip():
                        yield index, f"line {number} of {path}", line
                        index += 1

        def decode(line: bytes) -> Any:
            try:
                return json.loads(line)
            except ValueError as err:
                raise ValueError(f"is not valid JSON ({err}); each line must be one JSON record") from None

        return cls("prompts_path", str(path), records, decode)

    @classmethod
    def from_source(cls, prompts: Any, prompts_path: ObjectStoragePath | None) -> PromptSet:
        """The operator's prompt source: ``prompts_path`` when given, else the ``prompts`` list."""
        if prompts_path is None:
            return cls.from_list(prompts)
        if not prompts_path.exists():
            raise FireworksValidationError("prompts_path", f"{prompts_path} does not exist")
        return cls.from_jsonl(prompts_path)

    def spec(self, index: int, where: str, raw: Any) -> PromptSpec:
        try:
            return _prompt_spec(self._decode(raw), index)
        except ValueError as err:
            raise FireworksValidationError(self.field, f"{where} {err}") from None

    def validate(self) -> None:
        """Read every record (every shard sees the same errors); count, digest, tokenizer need."""
        digest = hashlib.sha256()
        total = 0
        for index, where, raw in self.records():
            spec = self.spec(index, where, raw)
            try:
                canonical = json.dumps(
                    [spec.messages, spec.prompt_token_ids, spec.metadata],
                    sort_keys=True,
                    separators=(",", ":"),
                    ensure_ascii=False,
                )
            except (TypeError, ValueError) as err:
                raise FireworksValidationError(
                    self.field, f"{where} is not JSON-serialisable ({err})"
                ) from None
            digest.update(canonical.encode())
            digest.update(b"\n")
            self.needs_tokenizer |= spec.messages is not None
            total += 1
        if total == 0:
            raise FireworksValidationError(self.field, f"{self.source} holds no prompt; give at least one")
        self.total = total
        self.digest = digest.hexdigest()

    def shard(self, shard_index: int, num_shards: int) -> ShardPrompts:
        return ShardPrompts(self, shard_index, num_shards)


class ShardPrompts:
    """The prompts of one shard (``index % num_shards == shard_index``), produced lazily."""

    def __init__(self, prompt_set: PromptSet, shard_index: int, num_shards: int) -> None:
        self._set = prompt_set
        self.indices = range(shard_index, prompt_set.total, num_shards)
        self._shard_index = shard_index
        self._num_shards = num_shards

    def __len__(self) -> int:
        return len(self.indices)

    def __contains__(self, index: object) -> bool:
        return index in self.indices

    def __iter__(self) -> Iterator[PromptSpec]:
        for index, where, raw in self._set.records():
            if index % self._num_shards == self._shard_index:
                yield self._set.spec(index, where, raw)
