"""``[core] hostname_callable`` of the cluster's Celery workers: the worker's name, so the metadata
database's ``task_instance.hostname`` says which of two workers on one machine ran a task."""

from __future__ import annotations

import os


def worker_hostname() -> str:
    """The ``FIREWORKS_CLUSTER_WORKER`` name the worker was started with (e.g. ``w1``)."""
    return os.environ["FIREWORKS_CLUSTER_WORKER"]
