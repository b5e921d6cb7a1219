"""Reading JSONL files of objects (task sets, corpora) with errors that name file and line.

A user's data file is the input most likely to be wrong. Every reader of one needs the same
answers: which line, what is wrong with it, and no half-read result.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_jsonl_objects(
    path: str | Path, error: type[Exception], what: str = "file"
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Yield `(where, line_no, row)` for each non-blank line; `where` is "path:line".

    Raises `error` naming the file and line for a missing file, a line that is not JSON or not
    an object, or bytes that are not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    with path.open("r", encoding="utf-8", errors="strict") as handle:
        line_no = 0
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{line_no}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise error(f"{where}: not valid JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise error(f"{where}: a row must be a JSON object")
                yield where, line_no, row
        except UnicodeDecodeError as err:
            raise error(f"{path}:{line_no + 1}: not UTF-8 ({err.reason})") from None
