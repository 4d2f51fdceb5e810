"""The metadata schema (SQLAlchemy 2.0). `images.id` is the FAISS id of the image's vector."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger
from sqlalchemy import Float
from sqlalchemy import ForeignKey
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

SCHEMA_VERSION = 1

# images.status values
PENDING = "pending"  # scanned, not embedded yet (a build was interrupted, or is running)
INDEXED = "indexed"  # has a row in the embedding store and a vector in the FAISS index
FAILED = "failed"  # could not be read or decoded; `error` says why


class MetaKey(StrEnum):
    """Every key of the `meta` table, in one place: a misspelt key is a type error, not a silent new row."""

    SCHEMA_VERSION = "schema_version"  # written last by the creator: the schema is complete
    ROOT = "root"  # the photo folder, absolute
    INDEX_INSIDE_ROOT = "index_inside_root"  # "1": the index folder is inside the photo folder and moves with it
    GENERATION = "generation"  # counts commits that change the indexed set (the FAISS file records its own)
    STORE_FILE = "store_file"  # the embedding store's file name inside the index folder
    STORE_DTYPE = "store_dtype"  # float16 or float32
    STORE_ROWS = "store_rows"  # committed rows of the embedding store
    COLOUR_ROWS = "colour_rows"  # committed rows of the colour-signature store
    THUMB_ROWS = "thumb_rows"  # committed rows of the thumbnail store
    MAX_INDEX_MEMORY = "max_index_memory"  # bytes the FAISS index may take (--max-index-memory)
    TARGET_RECALL = "target_recall"  # recall@10 the FAISS index is tuned to (--target-recall)
    LAST_EMBEDDING = "last_embedding"  # JSON: how the last build embedded (device, precision, ...), for `info`
    DEDUP_CALIBRATION = "dedup_calibration"  # JSON: the last dedup calibration


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value state: schema version, collection root, committed length of the embedding store, generation."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Model(Base):
    """The backbone an index was built with; every later embedding must come from the same weights."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    arch: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    embedding_dim: Mapped[int] = mapped_column(Integer)
    input_height: Mapped[int] = mapped_column(Integer)
    input_width: Mapped[int] = mapped_column(Integer)
    rgb_stats: Mapped[str] = mapped_column(Text)  # JSON {"mean": [...], "std": [...]}
    classes: Mapped[int] = mapped_column(Integer, default=0)  # size of the classifier head, 0 for encoders
    source: Mapped[str] = mapped_column(Text)  # published weights name, or the weights file's absolute path
    source_size: Mapped[int | None] = mapped_column(BigInteger)  # with mtime: skip re-hashing an unchanged file
    source_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_status", "status"),
        Index("ix_images_sha256", "sha256"),
        {"sqlite_autoincrement": True},
    )
    # AUTOINCREMENT: an id is never reused after a delete, so a stale FAISS vector can never name a new photo.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text, unique=True)  # relative to the collection root, "/"-separated
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    vector_row: Mapped[int | None] = mapped_column(BigInteger)  # row of the embedding store
    indexed_at: Mapped[datetime | None] = mapped_column()


class IndexManifest(Base):
    """The FAISS index file in use, what it was trained on, and the recall it was measured to deliver."""

    __tablename__ = "index_manifest"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file: Mapped[str] = mapped_column(String(200))  # file name inside the index folder
    generation: Mapped[int] = mapped_column(BigInteger)  # data generation the file holds
    factory: Mapped[str] = mapped_column(String(200))  # FAISS index_factory string
    params: Mapped[str] = mapped_column(Text)  # JSON: nlist, m, nprobe, k_factor, ...
    vector_count: Mapped[int] = mapped_column(BigInteger)
    trained_on: Mapped[int] = mapped_column(BigInteger)  # collection size when trained (growth triggers retraining)
    recall_at_10: Mapped[float | None] = mapped_column(Float)
    queries_per_second: Mapped[float | None] = mapped_column(Float)
    bytes_per_vector: Mapped[float | None] = mapped_column(Float)
    built_at: Mapped[datetime] = mapped_column(default=utcnow)


class LabelSet(Base):
    __tablename__ = "label_sets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class Label(Base):
    """A photo's class in one label set; a photo can be labelled in several sets."""

    __tablename__ = "labels"
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("label_sets.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))


class Prediction(Base):
    """What `lookup --all` predicted for an unlabelled photo."""

    __tablename__ = "predictions"
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("label_sets.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))  # "unknown" below the open-set threshold
    score: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(32))
    predicted_at: Mapped[datetime] = mapped_column(default=utcnow)


class DedupPlan(Base):
    """A dedup action plan, recorded before any file is touched: `dedup undo` acts only on plans recorded here."""

    __tablename__ = "dedup_plans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "move" or "delete"
    root: Mapped[str] = mapped_column(Text)  # the photo folder the plan's files lie in, absolute
    move_to: Mapped[str | None] = mapped_column(Text)
    csv: Mapped[str | None] = mapped_column(Text)  # the CSV export written for people, absolute
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DedupAction(Base):
    """One file of a plan, with what the index recorded of it and of its group's keeper when it was planned."""

    __tablename__ = "dedup_actions"
    plan_id: Mapped[int] = mapped_column(ForeignKey("dedup_plans.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(Integer)  # no foreign key: the row leaves `images` when the file goes
    path: Mapped[str] = mapped_column(Text)  # absolute
    dst: Mapped[str | None] = mapped_column(Text)  # absolute, moves only
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    keeper: Mapped[str] = mapped_column(Text)  # absolute
    keeper_root: Mapped[str] = mapped_column(Text)  # the keeper's photo folder (another index's with --against)
    keeper_size: Mapped[int] = mapped_column(BigInteger)
    keeper_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="planned")  # planned, done, skipped, undone
    reason: Mapped[str | None] = mapped_column(Text)  # why it was skipped


class NotDuplicate(Base):
    """A pair of images a person said are not duplicates: `dedup` never groups them, and the calibration may take
    them as known negatives. One row per pair, the smaller id first; a group is marked as all of its pairs. Ids are
    never reused (AUTOINCREMENT), and a renamed or moved file keeps its id, so a mark follows its photos."""

    __tablename__ = "not_duplicates"
    a_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    b_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
