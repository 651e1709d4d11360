"""The official SDK's trainer flow (fireworks-ai 1.2.30) runs unchanged against the emulator.

The SDK lives in its own virtual environment (``.bench/sdk-venv``), created on first use by
``benchmarks/_sdk_peer.py`` (the benchmarks share it); if it cannot be installed the test fails.
The script below uses only the
SDK's public ``TrainerJobManager`` and ``DeploymentManager`` and talks to the emulator over HTTP,
as a user's notebook would.
"""

from __future__ import annotations

import json
import subprocess

from benchmarks._sdk_peer import sdk_python
from tests.emulator_control import EmulatorProcess

SCRIPT = r"""
import json, sys, time, urllib.request
from fireworks.training.sdk.trainer import TrainerJobManager, TrainerJobConfig
from fireworks.training.sdk.deployment import DeploymentManager, DeploymentConfig

url, key = sys.argv[1], sys.argv[2]
base = "accounts/fireworks/models/qwen3-8b"
def admin(path, body=None):
    request = urllib.request.Request(f"{url}/_emulator/{path}", data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    return json.load(urllib.request.urlopen(request))
out = {}
trainers = TrainerJobManager(api_key=key, base_url=url)
ep = trainers.create_and_wait(TrainerJobConfig(base_model=base), poll_interval_s=0.1, timeout_s=30)
out["generated_id"] = ep.job_id
shaped = trainers.create_and_wait(
    TrainerJobConfig(base_model=base, training_shape_ref="accounts/fireworks/trainingShapes/qwen3-8b-policy",
                     requested_job_id="shaped"), poll_interval_s=0.1, timeout_s=30)
out["shape_context"] = shaped.max_context_length
admin(f"trainers/{ep.job_id}/preempt")
out["reconnected"] = trainers.reconnect_and_wait(ep.job_id, poll_interval_s=0.1, timeout_s=30).job_id
admin(f"trainers/{ep.job_id}/state", {"state": "PAUSED"})
out["resumed"] = trainers.resume_and_wait(ep.job_id, poll_interval_s=0.1, timeout_s=30).job_id
admin(f"trainers/{ep.job_id}/checkpoints", {"name": "step-0"})
out["checkpoints"] = [row["name"].rsplit("/", 1)[-1] for row in trainers.list_checkpoints(ep.job_id)]
model = trainers.promote_checkpoint(name=f"{ep.job_name}/checkpoints/step-0", output_model_id="final",
                                    base_model=base)
out["model"] = model["name"]
profile = trainers.resolve_training_profile("accounts/fireworks/trainingShapes/qwen3-8b-policy")
out["profile"] = profile.training_shape_version
deployments = DeploymentManager(api_key=key, base_url=url)
deployments.create_or_get(DeploymentConfig(deployment_id="sdk-dep", base_model=base,
    hot_load_trainer_job=ep.job_name, accelerator_type="NVIDIA_H100_80GB"))
deployments.wait_for_ready("sdk-dep", timeout_s=30, poll_interval_s=0.1)
info = deployments.reattach_trainer("sdk-dep", base_model=base, trainer_job_name=shaped.job_name,
                                    timeout_s=30, poll_interval_s=0.1, hot_load_transition_type="SYNC")
out["reattached"] = [info.hot_load_trainer_job, info.hot_load_transition_type, info.hot_load_bucket_url]
trainers.delete(ep.job_id)
time.sleep(0.5)
out["after_delete"] = trainers.try_get(ep.job_id)["state"]
try:
    trainers.create(TrainerJobConfig(base_model=base, requested_job_id=ep.job_id))
    out["tombstone"] = "created"
except RuntimeError as err:
    out["tombstone"] = "refused"
print(json.dumps(out))
"""


def test_the_official_sdk_trainer_flow_runs_unchanged(emulator: EmulatorProcess) -> None:
    emulator.configure(
        trainer_placement_s=0.2,
        trainer_boot_s=0.2,
        create_delay_s=0.2,
        update_delay_s=0.1,
        delete_delay_s=0.1,
    )
    done = subprocess.run(
        [str(sdk_python()), "-c", SCRIPT, emulator.url, emulator.api_key],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["generated_id"].startswith("training-api-service-")
    assert out["shape_context"] == 32768
    assert out["reconnected"] == out["resumed"] == out["generated_id"]
    assert out["checkpoints"] == ["step-0"]
    assert out["model"] == "accounts/emulator/models/final"
    assert out["profile"].endswith("/versions/v2")
    trainer, transition, bucket = out["reattached"]
    assert (trainer, transition) == ("accounts/emulator/rlorTrainerJobs/shaped", "SYNC")
    assert bucket.endswith("/rlorTrainerJobs/shaped")
    assert (out["after_delete"], out["tombstone"]) == ("JOB_STATE_DELETED", "refused")
