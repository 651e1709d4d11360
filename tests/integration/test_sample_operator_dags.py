"""FireworksSampleOperator inside DAG files run with dag.test(): prompts from an upstream task's
XCom, and a prompt set split over mapped shards (``.expand(shard_index=...)``)."""

from __future__ import annotations

import json

from airflow_fireworks.sampling import load_tokenizer
from airflow_fireworks.sampling.output import iter_records
from tests.airflow_helpers import TESTS_DAGS, run_dag_file, task_states, xcom
from tests.integration.test_sample_operator import FAST, create_deployment

TOKENIZER = TESTS_DAGS.parent.parent / "airflow_fireworks" / "tokenizer_data"


def test_prompts_from_an_upstream_task_and_completions_through_xcom(emulator, fireworks_conn_env):
    emulator.configure(**FAST)
    create_deployment(emulator, "sample-dag")

    run = run_dag_file(TESTS_DAGS / "sample_xcom.py", "sample_xcom_prompts", conf={"n": 3})

    assert task_states(run) == {"make_prompts": "success", "sample": "success", "group_sizes": "success"}
    result = xcom(run, "sample")
    assert result["num_prompts"] == 4 and result["num_completions"] == 12
    assert result["completions"][3]["metadata"] == {"answer": "red"}
    assert result["completions"][8]["prompt_token_ids"] == [1, 320, 85, 201, 17]
    assert xcom(run, "group_sizes") == {"0": 3, "1": 3, "2": 3, "3": 3}
    assert xcom(run, "sample", "_link_FireworksDeploymentLink") == (
        "https://app.fireworks.ai/dashboard/deployments/sample-dag"
    )
    assert len(emulator.requests(route="completions")) == 12
    tokenizer = load_tokenizer(TOKENIZER)
    assert result["completions"][9]["prompt_token_ids"] == tokenizer.apply_chat_template(
        [{"role": "user", "content": "Expand {{ a + b }}^2."}],
        tokenize=True,
        add_generation_prompt=True,
        return_dict=False,
    )


def test_shards_under_expand_split_the_prompts_without_overlap(emulator, fireworks_conn_env, tmp_path):
    emulator.configure(**FAST)
    create_deployment(emulator, "sample-dag")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_token_ids": [1, 50 + i, 9]}) + "\n" for i in range(10)))
    out = tmp_path / "rollouts"

    run = run_dag_file(
        TESTS_DAGS / "sample_shards.py",
        "sample_shards",
        conf={"prompts_path": f"file://{prompts}", "output_path": f"file://{out}"},
    )

    assert task_states(run) == {
        "sample[0]": "success",
        "sample[1]": "success",
        "sample[2]": "success",
        "totals": "success",
    }
    assert xcom(run, "totals")["prompts"] == 10 and xcom(run, "totals")["completions"] == 20
    for shard in range(3):
        summary = xcom(run, "sample", map_index=shard)
        assert summary["shard_index"] == shard and summary["num_shards"] == 3
        assert summary["completions_uri"] == f"file://{out}/shard-00000{shard}/completions.jsonl"
        with open(out / f"shard-00000{shard}" / "completions.jsonl") as fp:
            records = list(iter_records(fp))
        indices = sorted({r["prompt_index"] for r in records})
        assert indices == list(range(shard, 10, 3))
        assert all(r["prompt_token_ids"] == [1, 50 + r["prompt_index"], 9] for r in records)
        assert len(records) == 2 * len(indices)
    assert len(emulator.requests(route="completions")) == 20
