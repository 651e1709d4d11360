"""The official Fireworks SDK as a peer: sample RL steps with its own sampler and controller.

Runs under the SDK's virtual environment (``_sdk_peer.py`` creates it), never under the
package's: it imports only ``fireworks`` and the standard library. Reads one JSON job from stdin
and writes one JSON line per step to stdout::

    {"url", "api_key", "model", "controller": {"kind": "adaptive", ...params} | {"kind": "fixed",
     "window": N}, "steps": [{"prompts": [[ids], ...], "n", "max_tokens", "seed"}, ...]}
    -> {"step", "tokens", "completions", "wall_s", "queue_s": [...], "window", "summary"}

Every prompt of a step is gathered at once, as SDK users do; the controller gates the requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

from fireworks.training.sdk.concurrency import AdaptiveConcurrencyController, FixedConcurrencyController
from fireworks.training.sdk.sampling import DeploymentSampler


async def run(job: dict[str, Any]) -> None:
    spec = dict(job["controller"])
    kind = spec.pop("kind")
    controller: Any = (
        FixedConcurrencyController(spec["window"])
        if kind == "fixed"
        else AdaptiveConcurrencyController(**spec)
    )
    sampler = DeploymentSampler(job["url"], job["model"], job["api_key"], concurrency_controller=controller)
    try:
        for number, step in enumerate(job["steps"]):
            sampler.drain_metrics()
            started = time.perf_counter()
            # n=1 per sample with seed + i: the requests DeploymentSampler sends for n samples
            groups = await asyncio.gather(
                *(
                    sampler.sample_with_prompt_tokens(
                        prompt, n=1, max_tokens=step["max_tokens"], seed=step["seed"] + i
                    )
                    for prompt in step["prompts"]
                    for i in range(step["n"])
                )
            )
            wall = time.perf_counter() - started
            completions = [c for group in groups for c in group]
            queue = [
                m.prefill_queue_duration
                for m in sampler.drain_metrics()
                if m.prefill_queue_duration is not None and m.error is None
            ]
            summary = controller.step_completed()
            print(
                json.dumps(
                    {
                        "step": number,
                        "tokens": sum(c.completion_len for c in completions),
                        "completions": len(completions),
                        "wall_s": wall,
                        "queue_s": queue,
                        "window": controller.window_size,
                        "summary": summary,
                    }
                ),
                flush=True,
            )
    finally:
        client = getattr(sampler, "_async_client", None)
        if client is not None:
            await client.aclose()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(json.load(sys.stdin)))


if __name__ == "__main__":
    main()
