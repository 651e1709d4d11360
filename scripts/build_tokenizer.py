"""Build the small ChatML tokenizer shipped in ``airflow_fireworks/tokenizer_data``.

The tokenizer is a byte-level BPE (vocabulary about 2k) trained on a small built-in corpus. It
lets the tests, the emulator and the demo run offline with a real Hugging Face tokenizer and a real
chat template. Training is deterministic: running this script again rewrites identical files.

Usage: ``python scripts/build_tokenizer.py [OUTPUT_DIR]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS_TOPICS = [
    "arithmetic",
    "geometry",
    "probability",
    "algebra",
    "physics",
    "chemistry",
    "biology",
    "history",
    "poetry",
    "programming",
    "databases",
    "networks",
    "compilers",
    "statistics",
    "reinforcement learning",
    "policy gradients",
    "reward models",
    "tokenizers",
    "deployments",
]
CORPUS_TEMPLATES = [
    "Solve the following problem about {t} step by step and give the final answer.",
    "Explain {t} to a curious student in three short sentences.",
    "The answer is {n}. Let me check the {t} reasoning again: {n} plus {m} equals {s}.",
    "Question {n}: what is {m} times {n}? Answer: {p}.",
    "We sample completions, compute rewards, and update the policy on {t}.",
    "def solve_{n}(x):\n    return x * {m} + {n}\n",
    "Think carefully. First, consider {t}. Then write the result in a box.",
    "The quick brown fox jumps over the lazy dog while studying {t}.",
]


def build_corpus() -> list[str]:
    """Return the deterministic training corpus."""
    lines = []
    for i, topic in enumerate(CORPUS_TOPICS):
        for j, template in enumerate(CORPUS_TEMPLATES):
            n, m = i * 7 + j, j * 3 + 1
            lines.append(template.format(t=topic, n=n, m=m, s=n + m, p=n * m))
    return lines


def build(output_dir: Path) -> None:
    """Train the tokenizer and save it as a ``transformers`` tokenizer directory."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(build_corpus() * 4, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    wrapped.chat_template = CHAT_TEMPLATE
    output_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(output_dir))
    config_path = output_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    # Loadable by transformers 4.x as well as 5.x.
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "airflow_fireworks" / "tokenizer_data"
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
