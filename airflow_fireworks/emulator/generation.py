"""Deterministic token generation with consistent logprobs, from the shipped tokenizer's vocabulary.

One 64-bit draw per position picks five distinct candidate tokens, a probability profile, the
sample and the end-of-sequence decision; the tables derived from the request's sampling
parameters are built once per request, so a token costs about a microsecond.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import random
from array import array
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from tokenizers import Tokenizer

EOS_ID = 2
CANDIDATES = 5
_LEVELS = 16
# Share of probability mass left after the top candidate, split over candidates 2..5 (the rest
# belongs to the vocabulary tail).
_TAIL_SHARES = (0.5, 0.2, 0.1, 0.05)


class Vocabulary:
    """Token texts and bytes of the shipped tokenizer, decoded once."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        size = tokenizer.get_vocab_size()
        self.texts = [tokenizer.decode([i], skip_special_tokens=False) for i in range(size)]
        self.special = {
            i
            for i in range(size)
            if tokenizer.id_to_token(i) in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
        }
        self.bytes = [list(text.encode("utf-8")) for text in self.texts]
        self.generable = [
            i
            for i, text in enumerate(self.texts)
            if i not in self.special and text and "\ufffd" not in text and text.isprintable()
        ]

    @classmethod
    def shipped(cls) -> Vocabulary:
        """The tokenizer in ``airflow_fireworks/tokenizer_data``."""
        path = resources.files("airflow_fireworks") / "tokenizer_data" / "tokenizer.json"
        return cls(Tokenizer.from_str(path.read_text(encoding="utf-8")))

    def text(self, token_id: int) -> str:
        """Text of one id ("" for ids outside this vocabulary)."""
        return self.texts[token_id] if 0 <= token_id < len(self.texts) else ""

    def token_bytes(self, token_id: int) -> list[int]:
        return self.bytes[token_id] if 0 <= token_id < len(self.bytes) else []

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)


@dataclass(frozen=True)
class SamplingParams:
    """What shapes one completion."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop: tuple[str, ...]
    eos_probability: float
    min_tokens: int
    ignore_eos: bool
    logprobs: bool
    top_logprobs: int
    routing_matrix: bool


@dataclass
class Completion:
    """A finished plan: generated ids, per-token text deltas, finish reason, optional logprob rows."""

    token_ids: list[int]
    pieces: list[str]
    finish_reason: str
    rows: list[dict[str, Any]] = field(default_factory=list)


def seed_for(seed: int, identity: str | None, prompt: list[int], choice: int) -> int:
    """A stable 64-bit seed from the request seed, the served snapshot, the prompt and the choice index."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{seed}|{identity}|{choice}|".encode())
    digest.update(array("q", prompt).tobytes())
    return int.from_bytes(digest.digest(), "little")


@functools.lru_cache(maxsize=1024)
def _profiles(
    temperature: float, top_p: float, top_k: int
) -> list[tuple[list[float], list[float], list[float]]]:
    """Per jitter level: model logprobs, sampling cdf and sampling logprobs of the 5 candidates."""
    profiles = []
    for level in range(_LEVELS):
        top = 0.45 + 0.5 * level / (_LEVELS - 1)
        probs = [top] + [(1 - top) * share for share in _TAIL_SHARES]
        model = [math.log(p) for p in probs]
        allowed = CANDIDATES if top_k <= 0 else min(top_k, CANDIDATES)
        if temperature <= 0:
            weights = [1.0] + [0.0] * (CANDIDATES - 1)
        else:
            weights = [p ** (1 / temperature) if i < allowed else 0.0 for i, p in enumerate(probs)]
        total = sum(weights)
        weights = [w / total for w in weights]
        if top_p < 1:
            kept: list[float] = []
            acc = 0.0
            for w in weights:
                kept.append(w if acc < top_p or not kept else 0.0)
                acc += w
            total = sum(kept)
            weights = [w / total for w in kept]
        cdf, acc = [], 0.0
        for w in weights:
            acc += w
            cdf.append(acc)
        cdf[-1] = 1.0
        sampling = [math.log(w) if w > 0 else -math.inf for w in weights]
        profiles.append((model, cdf, sampling))
    return profiles


def generate(vocab: Vocabulary, params: SamplingParams, seed: int, text_offset: int = 0) -> Completion:
    """Sample one completion; ``text_offset`` is where the completion text starts (after an echo)."""
    rng = random.Random(seed)
    profiles = _profiles(params.temperature, params.top_p, params.top_k)
    pool = vocab.generable
    size = len(pool)
    texts = vocab.texts
    eos_threshold = int(params.eos_probability * 65536)
    ids: list[int] = []
    pieces: list[str] = []
    rows: list[dict[str, Any]] = []
    finish = "length"
    produced = ""
    longest_stop = max((len(s) for s in params.stop), default=0)
    for position in range(params.max_tokens):
        bits = rng.getrandbits(64)
        base = bits % size
        stride = 1 + (bits >> 16) % 37
        model, cdf, sampling = profiles[(bits >> 22) & (_LEVELS - 1)]
        u = ((bits >> 26) & 0xFFFFF) / 1048576.0
        rank = 0
        while u >= cdf[rank]:
            rank += 1
        eos_top = (
            not params.ignore_eos
            and position >= params.min_tokens
            and ((bits >> 46) & 0xFFFF) < eos_threshold
        )
        token = EOS_ID if eos_top and rank == 0 else pool[(base + rank * stride) % size]
        ids.append(token)
        piece = "" if token == EOS_ID else texts[token]
        if params.logprobs:
            rows.append(_row(vocab, params, token, rank, bits, model, sampling, text_offset + len(produced)))
        if token == EOS_ID:
            pieces.append("")
            finish = "stop"
            break
        if longest_stop:
            window = produced[-longest_stop:] + piece
            hit = next((s for s in params.stop if s in window), None)
            if hit is not None:
                cut = (produced + piece).index(hit, max(0, len(produced) - longest_stop))
                pieces.append((produced + piece)[len(produced) : cut] if cut > len(produced) else "")
                finish = "stop"
                break
        pieces.append(piece)
        produced += piece
    if params.routing_matrix:
        for index, row in enumerate(rows):
            row["routing_matrix"] = routing_matrix(ids[index], index)
    return Completion(ids, pieces, finish, rows)


def _row(
    vocab: Vocabulary,
    params: SamplingParams,
    token: int,
    rank: int,
    bits: int,
    model: list[float],
    sampling: list[float],
    offset: int,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "token": vocab.texts[token],
        "token_id": token,
        "logprob": model[rank],
        "sampling_logprob": sampling[rank],
        "bytes": vocab.bytes[token],
        "text_offset": offset,
    }
    if params.top_logprobs > 0:
        pool = vocab.generable
        size = len(pool)
        base, stride = bits % size, 1 + (bits >> 16) % 37
        shown = list(range(params.top_logprobs))
        if rank >= params.top_logprobs:
            shown[-1] = rank
        top = []
        for index in shown:
            candidate = token if index == rank else pool[(base + index * stride) % size]
            top.append({"token": vocab.texts[candidate], "token_id": candidate, "logprob": model[index]})
        row["top_logprobs"] = top
    return row


def echo_rows(
    vocab: Vocabulary, prompt_tail: list[int], full_echo: bool, seed: int, params: SamplingParams
) -> list[dict[str, Any]]:
    """Logprob rows for echoed prompt tokens (the first prompt token has none on a full echo)."""
    rng = random.Random(seed ^ 0x5EED)
    rows: list[dict[str, Any]] = []
    offset = 0
    for index, token in enumerate(prompt_tail):
        text = vocab.text(token)
        row: dict[str, Any] = {
            "token": text,
            "token_id": token,
            "bytes": vocab.token_bytes(token),
            "text_offset": offset,
        }
        if full_echo and index == 0:
            row.update(logprob=None, sampling_logprob=None)
            if params.top_logprobs > 0:
                row["top_logprobs"] = []
        else:
            logprob = -0.05 - 6.0 * rng.random()
            row.update(logprob=logprob, sampling_logprob=logprob)
            if params.top_logprobs > 0:
                top = [{"token": text, "token_id": token, "logprob": logprob}]
                for _ in range(params.top_logprobs - 1):
                    other = vocab.generable[rng.randrange(len(vocab.generable))]
                    top.append(
                        {
                            "token": vocab.texts[other],
                            "token_id": other,
                            "logprob": logprob - 0.5 - rng.random(),
                        }
                    )
                row["top_logprobs"] = top
        if params.routing_matrix:
            row["routing_matrix"] = routing_matrix(token, index)
        rows.append(row)
        offset += len(text)
    return rows


def routing_matrix(token: int, position: int) -> str:
    """A stand-in for the experts chosen at one position: base64 of 8 expert indices."""
    experts = bytes((token * 31 + position * 7 + layer * 13) % 64 for layer in range(8))
    return base64.b64encode(experts).decode("ascii")
