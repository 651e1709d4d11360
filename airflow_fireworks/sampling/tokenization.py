"""Client-side tokenization: load a Hugging Face tokenizer once per process, render chat prompts
in batches (chat templating dominates the client's CPU, and a batched call is about twice as fast
as one call per prompt)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_fireworks.api.errors import FireworksValidationError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Messages = Sequence[dict[str, Any]]


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """Load (once per process) the tokenizer of a Hub model id or a local directory.

    A local directory works offline; a Hub id needs network access or a warm Hub cache.
    """
    if not isinstance(name_or_path, str | os.PathLike) or not str(name_or_path).strip():
        raise FireworksValidationError(
            "tokenizer", "give a Hugging Face model id or a local tokenizer directory"
        )
    return _load_tokenizer(os.fspath(name_or_path))


@functools.lru_cache(maxsize=8)
def _load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


def validate_messages(messages: Any, field: str = "messages") -> None:
    """Raise ``FireworksValidationError`` unless ``messages`` is a non-empty list of chat messages."""
    if not isinstance(messages, list | tuple) or not messages:
        raise FireworksValidationError(
            field, "must be a non-empty list of chat messages like [{'role': 'user', 'content': '...'}]"
        )
    for position, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or "content" not in message
        ):
            raise FireworksValidationError(
                f"{field}[{position}]", "must be a dict with a string 'role' and a 'content'"
            )


def render_chat_prompts(tokenizer: Any, list_of_messages: Sequence[Messages]) -> list[list[int]]:
    """Token ids of many chat prompts (generation prompt appended), templated in one batched call."""
    if tokenizer is None:
        raise FireworksValidationError(
            "tokenizer", "a tokenizer is needed to render chat messages; pass one or send prompt_token_ids"
        )
    for position, messages in enumerate(list_of_messages):
        validate_messages(messages, f"messages of prompt {position}")
    if not list_of_messages:
        return []
    conversations = [list(messages) for messages in list_of_messages]
    rendered = tokenizer.apply_chat_template(
        conversations, tokenize=True, add_generation_prompt=True, return_dict=False
    )
    return [ids if type(ids) is list else list(ids) for ids in rendered]
