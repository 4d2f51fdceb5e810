"""What an index holds, for `birder-index info`: counts, model, FAISS index, sizes on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import MetaKey
from birder_index.indexer.index import Index


def describe(index: Index) -> dict[str, Any]:
    with session_scope(index.engine) as s:
        counts = q.counts(s)
        model = q.get_model(s)
        manifest = q.get_manifest(s)
        store_file = q.get_meta(s, MetaKey.STORE_FILE)
        store_dtype = q.get_meta(s, MetaKey.STORE_DTYPE)
        store_rows = q.get_int(s, MetaKey.STORE_ROWS)
        embedding = q.get_json(s, MetaKey.LAST_EMBEDDING)
    info: dict[str, Any] = {
        "index_dir": str(index.dir),
        "root": str(index.root) if index.root else None,
        "images": sum(counts.values()),
        "indexed": counts["indexed"],
        "pending": counts["pending"],
        "failed": counts["failed"],
        "vectors": manifest.vector_count if manifest else 0,
        "model": None,
        "index": None,
        "store": {"file": store_file, "dtype": store_dtype, "rows": store_rows},
        "last_embedding": embedding,  # the last build's device, precision, attention, compile, decode
        "disk_bytes": _disk_usage(index.dir),
    }
    if model is not None:
        info["model"] = {
            "name": model.name,
            "arch": model.arch,
            "sha256": model.sha256,
            "embedding_dim": model.embedding_dim,
            "input_size": [model.input_height, model.input_width],
            "source": model.source,
        }
    if manifest is not None:
        info["index"] = {
            "type": manifest.factory,
            "params": json.loads(manifest.params),
            "vectors": manifest.vector_count,
            "trained_on": manifest.trained_on,
            "recall_at_10": manifest.recall_at_10,
            "queries_per_second": manifest.queries_per_second,
            "bytes_per_vector": manifest.bytes_per_vector,
            "file": manifest.file,
            "built_at": manifest.built_at.isoformat(timespec="seconds") + "Z",
        }
    return info


def failed_files(index: Index) -> list[tuple[str, str]]:
    with session_scope(index.engine) as s:
        return q.failures(s)


def _disk_usage(folder: Path) -> dict[str, int]:
    out = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.endswith(".tmp"):
            out[path.name] = path.stat().st_size
    return out
