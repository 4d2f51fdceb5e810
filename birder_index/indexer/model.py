"""Which backbone an index uses: named on the first build, recorded, and checked on every later one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from birder_index.backbone.registry import DEFAULT_MODEL
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import Model
from birder_index.errors import BirderIndexError
from birder_index.errors import IndexMismatch
from birder_index.indexer.index import Index
from birder_index.indexer.index import check_model

if TYPE_CHECKING:
    from birder_index.backbone.encoder import Encoder

# The first build without --model or --weights uses the registry's DEFAULT_MODEL: small, 256 px, and its
# ImageNet-21K head lets `classify` work out of the box.


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    model: str | None = None  # published weights name, or the architecture of `weights`
    weights: Path | None = None
    size: int | None = None  # input size; ViT position embeddings are resized to it
    device: str | None = None
    precision: str = "auto"  # auto (bf16 where the hardware runs it natively), bf16, float32

    @property
    def given(self) -> bool:
        return bool(self.model or self.weights)


def expected_sha256(spec: ModelSpec, row: Model | None) -> str:
    """The sha256 the spec's weights will have, without loading them (a published name knows its hash)."""
    if spec.weights is not None:
        path = spec.weights.expanduser().resolve()
        if not path.is_file():
            raise BirderIndexError(f"--weights: file not found: {spec.weights}")
        st = path.stat()
        if (
            row is not None
            and row.source == str(path)
            and (row.source_size, row.source_mtime_ns)
            == (
                st.st_size,
                st.st_mtime_ns,
            )
        ):
            return row.sha256
        from birder_index.backbone.download import sha256_file

        return sha256_file(path)
    from birder_index.backbone.registry import pretrained

    return pretrained(spec.model or DEFAULT_MODEL).sha256


def check_spec(index: Index, spec: ModelSpec) -> None:
    """Refuse, before any work, a model other than the index's."""
    with session_scope(index.engine) as s:
        row = q.get_model(s)
    if row is None:
        return
    built = f"{row.input_height}x{row.input_width}"
    if spec.size is not None and (spec.size, spec.size) != (row.input_height, row.input_width):
        raise IndexMismatch(
            f"the index in {index.dir} embeds at {built} px, not --size {spec.size}: its vectors would not compare; "
            "leave --size out, or use another --index-dir"
        )
    if not spec.given:
        return
    if expected_sha256(spec, row) != row.sha256:
        if spec.weights is not None:
            from birder_index.backbone.checkpoint import sniff_format

            sniff_format(Path(spec.weights))  # a file that is no checkpoint at all says so, not "another model"
        asked = spec.model or (spec.weights.name if spec.weights else "?")
        raise IndexMismatch(
            f"the index in {index.dir} was built with {row.name} at {built} (sha256 {row.sha256[:12]}), not "
            f"{asked}; use another --index-dir"
        )


def load_encoder(index: Index, spec: ModelSpec, *, progress: bool = True) -> Encoder:
    """The encoder for a build: the spec's (recorded if the index is new) or the index's own."""
    from birder_index.backbone.load import load_backbone

    with session_scope(index.engine) as s:
        row = q.get_model(s)
    if row is not None and not spec.given:
        return index.load_encoder(device=spec.device, precision=spec.precision, progress=progress)
    model = spec.model if spec.given else DEFAULT_MODEL
    sha = expected_sha256(spec, row) if spec.weights is not None else None
    size = spec.size or ((row.input_height, row.input_width) if row is not None else None)
    enc = load_backbone(
        model,
        weights=spec.weights,
        size=size,
        device=spec.device,
        precision=spec.precision,
        sha256=sha,
        progress=progress,
    )
    if row is None:
        record_model(index, enc, spec)
    else:
        check_model(index, enc.info)
    return enc


def record_model(index: Index, enc: Encoder, spec: ModelSpec) -> None:
    info = enc.info
    source, size, mtime = info.name, None, None
    if spec.weights is not None:
        path = spec.weights.expanduser().resolve()
        st = path.stat()
        source, size, mtime = str(path), st.st_size, st.st_mtime_ns
    with session_scope(index.engine) as s:
        s.add(
            Model(
                name=info.name,
                arch=info.arch,
                sha256=info.sha256,
                embedding_dim=info.embedding_dim,
                input_height=info.preprocess.size[0],
                input_width=info.preprocess.size[1],
                rgb_stats=json.dumps({"mean": list(info.preprocess.mean), "std": list(info.preprocess.std)}),
                classes=len(info.classes),
                source=source,
                source_size=size,
                source_mtime_ns=mtime,
            )
        )
