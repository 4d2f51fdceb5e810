"""The `birder-index` command: each command parses, calls one public function, and prints.

Library errors (BirderIndexError) become `Error: ...` and exit code 1 here and nowhere else. torch and FAISS are
imported inside commands so that `--help` stays fast. `app.py` holds the group and the options commands share;
each other module holds one command or one family of commands.
"""

from __future__ import annotations

from birder_index.cli import build
from birder_index.cli import curation
from birder_index.cli import dedup
from birder_index.cli import fewshot
from birder_index.cli import maintenance
from birder_index.cli import models
from birder_index.cli import search
from birder_index.cli import serve
from birder_index.cli.app import cli

__all__ = ["build", "cli", "curation", "dedup", "fewshot", "maintenance", "models", "search", "serve"]
