"""predict's output file: never destroyed by a run that does not finish, and resumed by the next one.

Answers go to ``<output>.partial``, whole lines, a batch at a time, with ``<output>.partial.json``
beside it naming the run (the input, the model's weights, the decoding and the settings that shape
an answer). When the run ends the partial file is renamed over the output in one step, so a
complete earlier output survives a killed run. A re-run of the same run keeps the partial file's
complete lines (output rows follow input rows one to one) and asks only the rows after them; a
partial file of another run is replaced, and one without its marker is refused, never deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from medjson.errors import DataError

log = logging.getLogger(__name__)


def check_output(output: str, input_spec: str) -> Path | None:
    """The output path, checked before any model loads; None for standard output."""
    if output == "-":
        return None
    path = Path(output)
    source = Path(input_spec)
    if input_spec != "-" and (
        path.resolve() == source.resolve() or (path.exists() and source.exists() and os.path.samefile(path, source))
    ):
        raise DataError(f"--output {path} is the input file: writing it would destroy the input; choose another output")
    if path.is_dir():
        raise DataError(f"--output {path} is a folder: give the path of a file to write")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise DataError(f"--output {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DataError(f"--output {path}: no permission to write it (or in {folder})")
    return path


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PartialOutput:
    """Lines written to ``<path>.partial`` and renamed to ``path`` by ``finish``."""

    def __init__(self, path: Path):
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.marker = path.with_name(path.name + ".partial.json")
        self.stream = None

    def check_ours(self) -> dict | None:
        """The marker of the partial file an earlier run left (None where there is none); a partial file
        that predict did not write is refused, and kept. Cheap: run before the model loads."""
        if not self.partial.exists():
            return None
        if self.partial.is_dir():
            raise DataError(f"{self.partial} is a folder: remove it, or choose another --output")
        try:
            return json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise DataError(
                f"{self.partial} exists but has no readable {self.marker.name}: it was not written by predict, so "
                "nothing is deleted; remove it, or choose another --output"
            ) from None

    def open(self, run: dict) -> int:
        """Open for writing the answers of ``run`` (what makes them this run's: input, model, settings);
        returns how many rows a previous, unfinished run of the same run answered."""
        kept = self._resumable_rows(run)
        self.marker.write_text(json.dumps({"run": run}, sort_keys=True) + "\n", encoding="utf-8")
        self.stream = self.partial.open("a" if kept else "w", encoding="utf-8")
        return kept

    def _resumable_rows(self, run: dict) -> int:
        marker = self.check_ours()
        if marker is None:
            return 0
        if not isinstance(marker, dict) or marker.get("run") != run:
            log.warning("replacing %s: it holds answers of another run (input, model or settings differ)", self.partial)
            return 0
        data = self.partial.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]  # a line cut by a kill is dropped and asked again
        if len(whole) < len(data):
            with self.partial.open("r+b") as f:
                f.truncate(len(whole))
        return whole.count(b"\n")

    def write(self, text: str) -> None:
        self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def finish(self) -> None:
        """The run ended: the partial file replaces the output in one step."""
        self.stream.close()
        os.replace(self.partial, self.path)
        self.marker.unlink(missing_ok=True)

    def close(self) -> None:
        """Close after a failure too: what cannot be flushed any more is lost, a cut line with it, and a
        re-run asks those rows again."""
        if self.stream is not None and not self.stream.closed:
            try:
                self.stream.close()
            except OSError:
                pass
