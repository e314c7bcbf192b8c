"""Damaged tokenizer files, for the tests of how loading refuses them (BPE's and SentencePiece's)."""

from __future__ import annotations

import json
from pathlib import Path

from minillm.tokenizer import Tokenizer


def corrupt(tok: Tokenizer, tmp_path: Path, **changes: object) -> Path:
    """`tok` saved as tmp_path/bad.json with `changes` made: each key set to its value, or removed (None)."""
    data = tok.to_dict()
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
