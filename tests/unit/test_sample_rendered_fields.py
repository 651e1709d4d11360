"""The sampling operator's rendered fields as Airflow's task runner stores them for the UI."""

from __future__ import annotations

from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

from airflow_fireworks.operators.sampling import FireworksSampleOperator


def sample_operator(**kwargs: object) -> FireworksSampleOperator:
    return FireworksSampleOperator(
        task_id="sample", deployment_id="grpo", prompts=[{"prompt_token_ids": [1, 2]}], **kwargs
    )


def test_tokenizer_and_max_tokens_are_rendered_visibly():
    # What a rendered Jinja template gives: strings, which Airflow would mask under a "token" name.
    op = sample_operator(tokenizer="Qwen/Qwen3-8B", max_tokens="96")
    rendered = _serialize_rendered_fields(op)
    assert rendered["vocab"] == "Qwen/Qwen3-8B"
    assert rendered["max_toks"] == "96"
    assert "***" not in rendered.values()
    assert not any("token" in name for name in rendered)


def test_the_parameters_keep_their_names():
    op = sample_operator(tokenizer="{{ params.tok }}", max_tokens=8)
    assert (op.tokenizer, op.max_tokens) == ("{{ params.tok }}", 8)
    op.tokenizer = "Qwen/Qwen3-8B"
    assert op.vocab == "Qwen/Qwen3-8B" and op.tokenizer == "Qwen/Qwen3-8B"
    assert "vocab" in op.template_fields and "tokenizer" not in op.template_fields


def test_a_templated_tokenizer_is_checked_only_after_rendering():
    # At parse time a template is not a tokenizer name yet; after rendering it is checked.
    op = sample_operator(tokenizer="{{ params.tok }}")
    op.render_template_fields({"params": {"tok": "Qwen/Qwen3-8B"}})  # type: ignore[arg-type]
    assert op.tokenizer == "Qwen/Qwen3-8B"
    assert op._settings().tokenizer == "Qwen/Qwen3-8B"


def test_a_secret_named_field_is_still_masked():
    # The rename does not touch Airflow's rule: a value under a "token" name is still hidden.
    from airflow.sdk._shared.secrets_masker import redact

    assert redact("Qwen/Qwen3-8B", "tokenizer") == "***"
