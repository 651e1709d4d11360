"""Tokenized, streamed sampling from Fireworks deployments (no Airflow imports).

``SamplingParams`` declares and checks every sampling parameter; ``DeploymentSampler`` samples one
prompt at a time (``n`` completions, streamed, retried, under a concurrency controller);
``sample_prompts`` runs a large prompt set with bounded memory; ``SamplingRun`` counts a run of a
prompt shard and builds its summary and manifest; ``output`` defines the JSON Lines records
written for each completion.
"""

from __future__ import annotations

from airflow_fireworks.sampling.batch import PromptResult, PromptSpec, SamplingProgress, sample_prompts
from airflow_fireworks.sampling.completion import SampledCompletion
from airflow_fireworks.sampling.concurrency import (
    AdaptiveConcurrencyController,
    ConcurrencyController,
    FixedConcurrencyController,
)
from airflow_fireworks.sampling.errors import (
    DeploymentNotServingError,
    DeploymentSamplerTimeoutError,
    InvalidCompletionError,
    SamplingError,
    SamplingHTTPError,
    SamplingRequestError,
    StreamProtocolError,
    StreamTruncatedError,
    UpstreamStreamError,
)
from airflow_fireworks.sampling.metrics import ServerMetrics
from airflow_fireworks.sampling.output import completion_record, error_record
from airflow_fireworks.sampling.params import SamplingParams
from airflow_fireworks.sampling.run import SamplingRun
from airflow_fireworks.sampling.sampler import DeploymentSampler, SamplingRequest
from airflow_fireworks.sampling.tokenization import load_tokenizer, render_chat_prompts

__all__ = [
    "AdaptiveConcurrencyController",
    "ConcurrencyController",
    "DeploymentNotServingError",
    "DeploymentSampler",
    "DeploymentSamplerTimeoutError",
    "FixedConcurrencyController",
    "InvalidCompletionError",
    "PromptResult",
    "PromptSpec",
    "SampledCompletion",
    "SamplingError",
    "SamplingHTTPError",
    "SamplingParams",
    "SamplingProgress",
    "SamplingRequest",
    "SamplingRequestError",
    "SamplingRun",
    "ServerMetrics",
    "StreamProtocolError",
    "StreamTruncatedError",
    "UpstreamStreamError",
    "completion_record",
    "error_record",
    "load_tokenizer",
    "render_chat_prompts",
    "sample_prompts",
]
