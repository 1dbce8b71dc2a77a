"""What fss wrote, and from what: the JSON sidecar beside each segmentation it makes.

``fss segment`` writes ``<name>_dseg.json`` beside ``<name>_dseg.nii.gz`` (the BIDS sidecar of a
label map): the input (path and sha256), the model (name and weights' sha256), the options, and
the sha256 of every file of the output (label map, probability maps, QC picture). The sidecar is
written first, marked unfinished, and completed after the last file, so that:

- an output is *kept* only when its record is complete, asks for the same input, model and
  options, and every file it lists is there with its recorded sha256;
- an unfinished output of fss (a run killed, a full disk) is made again;
- a file that fss did not record (a manual label map, another tool's picture) is never replaced
  or adopted, with or without ``--overwrite``.

Example
-------
>>> request = Request(input="/data/scan.nii.gz", input_sha256="ab12", model_sha256="cd34", options={"tta": False})
>>> request.differences(Request(input="/copy/scan.nii.gz", input_sha256="ab12", model_sha256="ef56", options={"tta": False}))
['model_sha256']
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fss import __version__
from fss.paths import atomic_path

GENERATED_BY = {"Name": "fss", "Version": __version__, "CodeURL": "https://github.com/fetalsynthseg/fss"}
"""The BIDS ``GeneratedBy`` entry of everything fss writes."""


def sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(label_map: str | os.PathLike) -> Path:
    """``x_dseg.json`` for ``x_dseg.nii.gz`` (or ``x_dseg.nii``)."""
    path = Path(label_map)
    return path.with_name(path.name.removesuffix(".gz").removesuffix(".nii") + ".json")


@dataclass(frozen=True)
class Request:
    """What an output is made from: the input's path (resolved) and sha256, the model's weights (sha256), the options."""

    input: str
    input_sha256: str
    model_sha256: str
    options: dict

    def differences(self, other: Request) -> list[str]:
        """The fields in which ``other`` asks for something else (input and model count by their bytes, not their paths)."""
        return [name for name in ("input_sha256", "model_sha256", "options") if getattr(self, name) != getattr(other, name)]


@dataclass(frozen=True)
class Verdict:
    """What to do with an output that may exist: ``new`` (nothing there), ``kept`` (finished, same request),
    ``unfinished`` (fss's own, interrupted or with a file missing: made again), ``different`` (fss's, made from
    another request or changed since: replaced only with ``--overwrite``) or ``foreign`` (a file fss did not
    write: never replaced); ``reason`` says why, ``record`` is fss's record of the output read to judge it (None: none)."""

    action: str
    reason: str = ""
    record: dict | None = None


def judge(label_map: Path, files: list[Path], request: Request) -> Verdict:
    """What to do with the output ``label_map`` (its other files ``files``) for ``request``."""
    record = read_record(label_map)
    present = [path for path in [label_map, *files] if path.exists()]
    if record is None:
        if sidecar_path(label_map).exists():
            return Verdict("foreign", f"{sidecar_path(label_map)} is not a record of fss; fss never replaces it")
        if present:
            return Verdict("foreign", f"{present[0]} was not written by fss (no record in {sidecar_path(label_map).name}); fss never replaces it")
        return Verdict("new")
    verdict = functools.partial(Verdict, record=record)
    recorded = record.get("files", {})
    unrecorded = [path for path in present if path.name not in recorded and path.name not in record.get("planned", [])]
    if unrecorded:
        return verdict("foreign", f"{unrecorded[0]} was not written by fss for {label_map.name}; fss never replaces it")
    if not record.get("complete"):
        return verdict("unfinished", f"{label_map.name}: an earlier run stopped before all its files were written")
    previous = Request(**{field.name: record.get(field.name) for field in dataclasses.fields(Request)})
    changed = previous.differences(request)
    if changed:
        words = {"input_sha256": "another input", "model_sha256": "another model", "options": "other options"}
        return verdict("different", f"{label_map} was made from {' and '.join(words[name] for name in changed)} (--overwrite replaces it)")
    if any(path.name not in recorded or not path.exists() for path in [label_map, *files]):
        return verdict("unfinished", f"{label_map.name}: asked now with files that are not there")
    changed = [path for path in [label_map, *files] if sha256(path) != recorded[path.name]]
    if changed:
        return verdict("different", f"{changed[0]} changed since fss wrote it (--overwrite replaces it)")
    return verdict("kept")


def read_record(label_map: str | os.PathLike) -> dict | None:
    """fss's record of ``label_map`` (its sidecar), or None when there is none or it is another tool's."""
    path = sidecar_path(label_map)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    generated = record.get("GeneratedBy", []) if isinstance(record, dict) else []
    return record if any(isinstance(g, dict) and g.get("Name") == "fss" for g in generated) else None


def write_record(label_map: Path, request: Request, files: list[Path], complete: bool, model_name: str) -> None:
    """The sidecar of ``label_map``: unfinished (the files about to be written), or complete with every file's sha256;
    ``model_name`` (a packaged model's name or a checkpoint's path) is recorded for people to read."""
    record = {
        "Description": "Brain tissue segmentation (FeTA labels) by fss",
        "Sources": [request.input],
        "GeneratedBy": [GENERATED_BY],
        "model": model_name,
        **dataclasses.asdict(request),
        "complete": complete,
        "planned": [path.name for path in [label_map, *files]],
        "files": {path.name: sha256(path) for path in [label_map, *files]} if complete else {},
    }
    with atomic_path(sidecar_path(label_map), overwrite=True) as temporary:
        temporary.write_text(json.dumps(record, indent=1))
