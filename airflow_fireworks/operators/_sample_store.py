"""Where ``FireworksSampleOperator`` keeps one shard's output, and what a retry finds there.

Layout under ``output_path`` for shard ``k``::

    shard-00000k/inputs.json                  while sampling: what is being sampled
    shard-00000k/served_identity.json         while sampling: identities served (with base_model)
    shard-00000k/part-<try>-<uuid8>.jsonl     while sampling, on a local disk: one file per try
    shard-00000k/part-<try>-<uuid8>-<seq>.jsonl   while sampling, on an object store: one object
                                              per few groups (see below)
    shard-00000k/completions.jsonl            at the end: one record per completion
    shard-00000k/errors.jsonl                 at the end: one error record per failed prompt
    shard-00000k/manifest.json                at the end, written last

What a killed try (SIGKILL, OOM, node loss) leaves depends on the store:

- a local disk (``file://``): each prompt's whole group goes to the try's one part with one write
  and one flush, so everything before the kill is kept and only the part's last group can be torn;
- an object store (``s3://``, ``gs://``, ...): an object exists whole or not at all and nothing of
  an open one is stored before it is closed, so groups are buffered and a part object is written
  (one PUT) every ``OBJECT_PART_GROUPS`` groups or ``OBJECT_PART_S`` seconds, whichever comes
  first. A kill loses the buffered groups only (fewer than ``OBJECT_PART_GROUPS``), never a part.
  A try that starts aborts the incomplete multipart uploads (S3) a killed one left in the shard.

``scan`` reads what earlier tries left: a torn last line is ignored, and a prompt counts as done
only when its complete group is there.
``consolidate`` writes ``completions.jsonl`` ordered by prompt then sample, each (prompt, sample)
once, through a temporary file renamed into place; the parts are removed only after the manifest
is written. ``manifest.json`` is present only when the shard is complete.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from airflow_fireworks.api import FireworksValidationError
from airflow_fireworks.sampling.output import (
    COMPLETION,
    ERROR,
    dumps_record,
    result_records,
    write_result,
)
from airflow_fireworks.sampling.run import Tally

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_fireworks.sampling import PromptResult

log = logging.getLogger(__name__)

COMPLETIONS_FILE = "completions.jsonl"
ERRORS_FILE = "errors.jsonl"
MANIFEST_FILE = "manifest.json"
INPUTS_FILE = "inputs.json"
SERVED_IDENTITY_FILE = "served_identity.json"
_TMP_SUFFIX = ".tmp"
_PART_RE = re.compile(r"^part-(\d+)-([0-9a-f]{8})(-\d{6})?\.jsonl$")
#: On an object store a try's part object is written after this many groups ...
OBJECT_PART_GROUPS = 32
#: ... or once its oldest buffered group is this many seconds old, whichever comes first.
OBJECT_PART_S = 5.0
_LOCAL_PROTOCOLS = frozenset({"file", "local", ""})
_S3_PROTOCOLS = frozenset({"s3", "s3a", "s3n"})
#: The start of a record line as ``dumps_record`` writes it: enough to tell which prompt a torn
#: line belonged to.
_RECORD_HEAD_RE = re.compile(rb'^\{"type":"(?:completion|error)","prompt_index":(\d+)[,}]')


def shard_dir_name(shard_index: int) -> str:
    """``shard-000003`` for shard 3."""
    return f"shard-{shard_index:06d}"


@dataclass(slots=True)
class _Group:
    """One prompt's consecutive completion records in one file (byte range ``start:end``)."""

    prompt_index: int
    source: int
    start: int
    end: int = 0
    sample_indices: list[int] = field(default_factory=list)
    prompt_lens: list[int] = field(default_factory=list)
    completion_lens: list[int] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    damaged: bool = False

    def is_complete(self, n: int, *, may_be_torn: bool) -> bool:
        """Whole when it holds samples 0..n-1; a group with fewer samples (the others dropped by
        ``max_seq_len``) is trusted only where no crash can have cut it short."""
        if self.damaged or len(set(self.sample_indices)) != len(self.sample_indices):
            return False
        if sorted(self.sample_indices) == list(range(n)):
            return True
        return not may_be_torn and 0 < len(self.sample_indices) <= n


@dataclass
class ShardContents:
    """What the shard directory holds: the one complete group chosen for each done prompt, the
    latest error of each prompt without one, and the files they came from."""

    n: int
    sources: list[ObjectStoragePath]
    groups: dict[int, _Group]
    errors: dict[int, dict[str, Any]]

    @property
    def done(self) -> frozenset[int]:
        """Indices of prompts whose complete group is present (not to be sampled again)."""
        return frozenset(self.groups)

    def tally(self) -> Tally:
        """Counts over the chosen groups."""
        tally = Tally(self.n)
        for group in self.groups.values():
            tally.add_group(group.prompt_lens, group.completion_lens, group.finish_reasons)
        return tally


def is_local(path: ObjectStoragePath) -> bool:
    """Whether ``path`` is on a local disk (appends and flushes reach the file at once)."""
    return str(getattr(path, "protocol", "file") or "") in _LOCAL_PROTOCOLS


def plain_uri(path: ObjectStoragePath) -> str:
    """``path`` without the connection id (``s3://bucket/key``), for s3fs, boto3 or a trainer."""
    protocol = str(path.protocol or "file")
    return f"file://{path.path}" if protocol in _LOCAL_PROTOCOLS else f"{protocol}://{path.path}"


class PartWriter:
    """Appends prompt groups to this try's part file: one write and one flush per prompt."""

    def __init__(self, path: ObjectStoragePath) -> None:
        self.path = path
        self._fp: IO[str] = path.open("w", encoding="utf-8", newline="\n")

    def write(self, result: PromptResult) -> None:
        """Write one prompt's records (its completions, or its error record)."""
        if write_result(self._fp, result):
            self._fp.flush()

    def close(self) -> None:
        self._fp.close()


class ObjectPartWriter(PartWriter):
    """Buffers prompt groups and writes them as a new part object (``<stem>-<seq>.jsonl``) every
    ``max_groups`` groups or ``max_age_s`` seconds (checked at each write), and at ``close``.

    Thread-safe: the operator writes from worker threads.
    """

    def __init__(
        self,
        path: ObjectStoragePath,
        *,
        max_groups: int = OBJECT_PART_GROUPS,
        max_age_s: float = OBJECT_PART_S,
    ) -> None:
        self.path = path
        self.max_groups = max_groups
        self.max_age_s = max_age_s
        self.written: list[ObjectStoragePath] = []
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self._oldest = 0.0

    def write(self, result: PromptResult) -> None:
        """Buffer one prompt's records; write the part object when it is due."""
        records = result_records(result)
        if not records:
            return
        with self._lock:
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer.append("".join(dumps_record(record) for record in records))
            if len(self._buffer) >= self.max_groups or time.monotonic() - self._oldest >= self.max_age_s:
                self._flush()

    def close(self) -> None:
        """Write what is buffered."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        part = self.path.with_name(f"{self.path.stem}-{len(self.written):06d}.jsonl")
        part.write_bytes("".join(self._buffer).encode("utf-8"))
        self.written.append(part)
        self._buffer.clear()


class ShardStore:
    """The directory of one shard under ``output_path``."""

    def __init__(self, root: ObjectStoragePath, shard_index: int) -> None:
        self.directory = root / shard_dir_name(shard_index)
        self.completions_path = self.directory / COMPLETIONS_FILE
        self.errors_path = self.directory / ERRORS_FILE
        self.manifest_path = self.directory / MANIFEST_FILE
        self.inputs_path = self.directory / INPUTS_FILE
        self.served_identity_path = self.directory / SERVED_IDENTITY_FILE

    def __repr__(self) -> str:
        return f"ShardStore({str(self.directory)!r})"

    # -- state of the directory ------------------------------------------------------------

    def prepare(self, inputs: dict[str, Any], *, overwrite: bool) -> dict[str, Any] | None:
        """Make the directory ready for ``inputs`` and return its manifest if the shard is
        already complete for these inputs.

        Files left by different inputs are refused (``FireworksValidationError`` naming what
        differs) unless ``overwrite``, which removes them.
        """
        self._invalidate_listing()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.abort_incomplete_uploads()
        manifest = _read_json(self.manifest_path)
        recorded = manifest.get("inputs") if manifest is not None else _read_json(self.inputs_path)
        if recorded is None and self._our_files():
            recorded = {}
        expected = json.loads(json.dumps(inputs))
        if recorded is not None and recorded != expected:
            if not overwrite:
                raise FireworksValidationError(
                    "output_path",
                    f"{self.directory} already holds results of different inputs "
                    f"({_differences(recorded, expected)}); use another output_path, or set "
                    "overwrite=True to replace them",
                )
            log.warning("Removing results of different inputs from %s (overwrite=True)", self.directory)
            for path in self._our_files():
                path.unlink()
            manifest = None
        if manifest is not None:
            return manifest
        if recorded != expected:
            self._record_inputs(expected)
        return None

    def _record_inputs(self, inputs: dict[str, Any]) -> None:
        """Write ``inputs.json`` whole or not at all: a try killed while writing it leaves only a
        temporary file, never an empty record that would make every retry refuse the directory."""
        temporary = self.directory / f"{self.inputs_path.name}.tmp"
        temporary.write_text(json.dumps(inputs, indent=2, sort_keys=True), encoding="utf-8")
        temporary.rename(self.inputs_path)

    def reopen(self, manifest: dict[str, Any]) -> None:
        """Mark a complete shard as in progress again; its ``completions.jsonl`` stays as a resume
        source, so only prompts without a complete group are sampled again."""
        self._record_inputs(manifest["inputs"])
        self.manifest_path.unlink()
        if self.errors_path.exists():
            self.errors_path.unlink()
        served = manifest.get("served_identity")
        if isinstance(served, dict):
            self.remember_served_identities([served["start"], served["end"]])

    def served_identities(self) -> list[list[str | None]]:
        """The snapshot identities earlier tries read before sampling into this directory
        (earliest first), so that the manifest's ``served_identity`` covers every completion."""
        recorded = _read_json(self.served_identity_path)
        seen = recorded.get("seen") if recorded is not None else None
        return seen if isinstance(seen, list) else []

    def remember_served_identities(self, seen: list[list[str | None]]) -> None:
        """Record the identities read so far (before any completion of this try is written)."""
        self.served_identity_path.write_text(json.dumps({"seen": seen}), encoding="utf-8")

    def open_part(self, try_number: int) -> PartWriter:
        """A new part file for this task try (never one an earlier or concurrent try uses); on an
        object store a series of part objects (``ObjectPartWriter``)."""
        path = self.directory / f"part-{try_number}-{uuid.uuid4().hex[:8]}.jsonl"
        return PartWriter(path) if is_local(self.directory) else ObjectPartWriter(path)

    def locations(self) -> dict[str, str | None]:
        """Where the results are, for a reader without Airflow: the URIs without the connection
        id (``s3://bucket/...``) and the connection id (None for a local disk or the default
        credentials)."""
        return {
            "conn_id": getattr(self.directory, "conn_id", None),
            "completions_uri": plain_uri(self.completions_path),
            "errors_uri": plain_uri(self.errors_path),
            "manifest_uri": plain_uri(self.manifest_path),
        }

    def abort_incomplete_uploads(self) -> int:
        """Abort the multipart uploads a killed try left under this shard (S3 only: other stores
        keep nothing of an unfinished upload that needs cleaning); returns how many."""
        if str(self.directory.protocol) not in _S3_PROTOCOLS:
            return 0
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        client = S3Hook(aws_conn_id=getattr(self.directory, "conn_id", None)).get_conn()
        bucket, prefix = self.directory.bucket, self.directory.key.rstrip("/") + "/"
        aborted = 0
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
        if aborted:
            log.info("Aborted %d incomplete multipart uploads under s3://%s/%s", aborted, bucket, prefix)
        return aborted

    def scan(self, n: int, *, clean: Collection[str] = ()) -> ShardContents:
        """Read every resume source: ``completions.jsonl`` (always whole), then the parts by
        try. Files named in ``clean`` were closed normally, so their last group is whole
        even with fewer than ``n`` records; so are part objects (written whole or not at all)."""
        self._invalidate_listing()
        sources: list[ObjectStoragePath] = []
        if self.completions_path.exists():
            sources.append(self.completions_path)
        sources.extend(self._parts())
        groups: dict[int, _Group] = {}
        errors: dict[int, dict[str, Any]] = {}
        for number, path in enumerate(sources):
            may_be_torn = (
                path.name not in clean and path.name != COMPLETIONS_FILE and not _is_object_part(path.name)
            )
            file_groups, file_errors = _scan_file(path, number)
            for position, group in enumerate(file_groups):
                last = position == len(file_groups) - 1
                if group.prompt_index not in groups and group.is_complete(
                    n, may_be_torn=may_be_torn and last
                ):
                    groups[group.prompt_index] = group
            errors.update(file_errors)
        for index in groups:
            errors.pop(index, None)
        return ShardContents(n=n, sources=sources, groups=groups, errors=errors)

    # -- the end of a shard ----------------------------------------------------------------

    def consolidate(self, contents: ShardContents) -> None:
        """Write ``completions.jsonl`` (ordered, one record per (prompt, sample)) and
        ``errors.jsonl`` from ``contents``; the sources stay until ``finish``."""
        tmp = self.directory / (COMPLETIONS_FILE + _TMP_SUFFIX)
        readers: dict[int, IO[bytes]] = {}
        try:
            with tmp.open("wb") as out:
                for index in sorted(contents.groups):
                    group = contents.groups[index]
                    reader = readers.get(group.source)
                    if reader is None:
                        reader = readers[group.source] = contents.sources[group.source].open("rb")
                    reader.seek(group.start)
                    out.write(_ordered(reader.read(group.end - group.start), group.sample_indices))
        finally:
            for reader in readers.values():
                reader.close()
        tmp.replace(self.completions_path)
        with self.errors_path.open("w", encoding="utf-8", newline="\n") as out:
            for index in sorted(contents.errors):
                out.write(dumps_record(contents.errors[index]))

    def finish(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (the shard is then complete), then remove the scratch files."""
        self.manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        self.remove_scratch()

    def remove_scratch(self) -> None:
        """Remove the parts, ``inputs.json`` and temporary files; results stay."""
        self._invalidate_listing()
        scratch = [
            self.inputs_path,
            self.served_identity_path,
            self.directory / (COMPLETIONS_FILE + _TMP_SUFFIX),
        ]
        for path in [*self._parts(), *scratch]:
            if path.exists():
                path.unlink()

    # -- helpers ---------------------------------------------------------------------------

    def _parts(self) -> list[ObjectStoragePath]:
        if not self.directory.exists():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _PART_RE.match(path.name)
            if match:
                found.append((int(match.group(1)), path.name, path))
        return [path for _, _, path in sorted(found)]

    def _our_files(self) -> list[ObjectStoragePath]:
        names = {
            COMPLETIONS_FILE,
            ERRORS_FILE,
            MANIFEST_FILE,
            INPUTS_FILE,
            SERVED_IDENTITY_FILE,
            COMPLETIONS_FILE + _TMP_SUFFIX,
        }
        if not self.directory.exists():
            return []
        return [path for path in self.directory.iterdir() if path.name in names or _PART_RE.match(path.name)]

    def _invalidate_listing(self) -> None:
        # Object-store filesystems cache listings; another try may have changed them.
        self.directory.fs.invalidate_cache()


def _is_object_part(name: str) -> bool:
    match = _PART_RE.match(name)
    return match is not None and match.group(3) is not None


def _read_json(path: ObjectStoragePath) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("Ignoring %s: not valid JSON", path)
        return None
    return data if isinstance(data, dict) else None


def _differences(recorded: dict[str, Any], expected: dict[str, Any]) -> str:
    if not recorded:
        return "files not written by this operator, or without their inputs.json"
    return "different " + ", ".join(_differing_keys(recorded, expected))


def _differing_keys(recorded: dict[str, Any], expected: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(recorded.keys() | expected.keys()):
        old, new = recorded.get(key), expected.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            keys.extend(_differing_keys(old, new, f"{prefix}{key}."))
        elif key == "prompts_sha256" and old != new:
            keys.append(f"{prefix}prompts")
        elif old != new:
            keys.append(f"{prefix}{key} ({old!r} != {new!r})")
    return keys


def _scan_file(path: ObjectStoragePath, source: int) -> tuple[list[_Group], dict[int, dict[str, Any]]]:
    """The completion groups (in file order) and error records of one JSON Lines file."""
    groups: list[_Group] = []
    errors: dict[int, dict[str, Any]] = {}
    current: _Group | None = None
    offset = 0
    with path.open("rb") as fp:
        for line in fp:
            start, offset = offset, offset + len(line)
            record = _parse(line)
            if record is None:
                if line.strip():
                    log.warning("Ignoring an incomplete line at byte %d of %s", start, path)
                    current = _damage(groups, current, line, source, start)
                continue
            index = record["prompt_index"]
            if record["type"] == ERROR:
                current = None
                errors[index] = record
                continue
            if current is None or current.prompt_index != index:
                current = _Group(prompt_index=index, source=source, start=start)
                groups.append(current)
            current.end = offset
            current.sample_indices.append(record["sample_index"])
            current.prompt_lens.append(record["prompt_len"])
            current.completion_lens.append(record["completion_len"])
            current.finish_reasons.append(record["finish_reason"])
    return groups, errors


def _damage(
    groups: list[_Group], current: _Group | None, line: bytes, source: int, start: int
) -> _Group | None:
    """Account for a line that is not a record; returns the group that continues.

    A torn last line whose prompt cannot be told needs nothing: the group before it is the
    file's last one, whole only with all ``n`` samples. Otherwise the line's group (its own
    prompt's, or the current one) is marked damaged, so that its prompt is sampled again.
    """
    head = _RECORD_HEAD_RE.match(line)
    if head is None and not line.endswith(b"\n"):
        return current
    index = int(head.group(1)) if head is not None else None
    if current is not None and index in (None, current.prompt_index):
        current.damaged = True
        return current
    if index is None:
        return current
    damaged = _Group(prompt_index=index, source=source, start=start, damaged=True)
    groups.append(damaged)
    return damaged


def _parse(line: bytes) -> dict[str, Any] | None:
    """A record from one whole line, or None for a torn or foreign line."""
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or type(record.get("prompt_index")) is not int:
        return None
    if record.get("type") == ERROR:
        return record
    if record.get("type") != COMPLETION or type(record.get("sample_index")) is not int:
        return None
    return record


def _ordered(data: bytes, sample_indices: list[int]) -> bytes:
    """A group's lines ordered by sample index."""
    if sample_indices == sorted(sample_indices):
        return data
    lines = data.splitlines(keepends=True)
    return b"".join(line for _, line in sorted(zip(sample_indices, lines, strict=True)))
