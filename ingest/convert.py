"""Conversion of verified IDX files into sharded TFRecords of tf.train.Example.

Here live the Example format (an ``image`` bytes feature holding the 784 raw
uint8 pixels row-major, and an int64 ``label``), its encoder and numpy decoder,
the shard writer, and ``convert_dataset``, which turns a directory of IDX files
into ``<output>/{train,validation,test}/*.tfrecord`` and ``<output>/manifest.json``.
The official training file is cut into ``train`` and a held-out ``validation`` part
(``hold_out_validation``: 1/12 of it, stratified by class, drawn with a fixed seed
and recorded in the manifest, so every run can tell exactly which official images
it never trained on); ``test`` is the official test file, untouched: it is the
final, once-per-run measure (the Evaluator's gate), while ``validation`` is what
the Trainer looks at during training. Output is assembled in a temporary sibling
directory and moved into place with the manifest last, so a half-written
conversion never looks complete; a run whose sources match an existing
manifest is skipped. Finding and verifying the IDX files is
``ingest.fetch``; parsing them is ``ingest.idx``; the TFX pipeline
that consumes the TFRecords lives elsewhere.
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ingest.datasets import (
    IMAGE_HEIGHT,
    IMAGE_KEY,
    IMAGE_WIDTH,
    LABEL_KEY,
    NUM_CLASSES,
    SPLITS,
    DatasetInfo,
    SplitName,
    get_dataset,
)
from ingest.fetch import find_idx_files, verify_idx_files
from ingest.idx import read_idx_pair

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
# 2: three splits (train, validation, test) and the "validation" record; format 1
# had two (train, eval) and is converted again, never read as a span.
MANIFEST_FORMAT_VERSION = 2
SHARD_SUFFIX = ".tfrecord"
IMAGE_BYTES = IMAGE_HEIGHT * IMAGE_WIDTH
IMAGE_ENCODING = f"raw uint8 {IMAGE_HEIGHT}x{IMAGE_WIDTH} row-major"
# The validation split is 1/VALIDATION_DENOMINATOR of the official training examples
# (5,000 of 60,000), drawn per class with numpy.random.default_rng([VALIDATION_SEED, c]).
# Changing either changes which images are held out, so it reconverts (see
# _reusable_conversion).
VALIDATION_DENOMINATOR = 12
VALIDATION_SEED = 20261126
VALIDATION_METHOD = (
    "stratified by label: per-class counts by largest remainder of n_c * total / n "
    "(ties to the lower label), total = n / 12 rounded half up; per class the first "
    "count indices of numpy.random.default_rng([seed, label]).permutation(indices of "
    "that label), then sorted"
)


@dataclasses.dataclass(frozen=True)
class ConversionResult:
    """What a conversion produced (or found already produced) in output_dir."""

    dataset: str
    output_dir: Path
    counts: dict[str, int]
    shards: dict[str, tuple[Path, ...]]
    source_sha256: dict[str, str]
    reused: bool = False
    # The manifest's "validation" record (see hold_out_validation).
    validation: dict[str, Any] = dataclasses.field(default_factory=dict)


def example_feature_spec() -> dict[str, tf.io.FixedLenFeature]:
    """Feature spec for tf.io.parse_example on the records written here."""
    return {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }


def _example_from_bytes(image_bytes: bytes, label: int) -> tf.train.Example:
    """Build the Example proto from already-validated raw pixel bytes."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
                LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
        )
    )


def image_to_example(image: np.ndarray, label: int) -> tf.train.Example:
    """Encode one 28x28 uint8 image and its 0..9 label as a tf.train.Example."""
    image = np.asarray(image)
    if image.shape != (IMAGE_HEIGHT, IMAGE_WIDTH) or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 image of shape ({IMAGE_HEIGHT}, {IMAGE_WIDTH}), "
            f"found {image.dtype} {image.shape}"
        )
    if not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"expected a label in 0..{NUM_CLASSES - 1}, found {label}")
    return _example_from_bytes(image.tobytes(order="C"), int(label))


def parse_example_bytes(serialized: bytes) -> tuple[np.ndarray, int]:
    """Decode a serialized Example back to a (28, 28) uint8 image and an int label."""
    features = tf.train.Example.FromString(serialized).features.feature
    image_values = features[IMAGE_KEY].bytes_list.value if IMAGE_KEY in features else []
    label_values = features[LABEL_KEY].int64_list.value if LABEL_KEY in features else []
    if len(image_values) != 1 or len(image_values[0]) != IMAGE_BYTES:
        sizes = [len(value) for value in image_values]
        raise ValueError(
            f"expected one {IMAGE_BYTES}-byte '{IMAGE_KEY}' value, found sizes {sizes}"
        )
    if len(label_values) != 1:
        raise ValueError(f"expected one '{LABEL_KEY}' value, found {len(label_values)}")
    image = np.frombuffer(image_values[0], dtype=np.uint8).reshape(IMAGE_HEIGHT, IMAGE_WIDTH)
    return image.copy(), int(label_values[0])


def shard_name(index: int, num_shards: int) -> str:
    """File name of one shard, e.g. data-00001-of-00004.tfrecord."""
    return f"data-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def _check_shard_count(num_shards: int, count: int | None, what: str) -> None:
    """Reject no shards at all, and (when count is known) shards that would be empty."""
    if num_shards < 1:
        raise ValueError(f"{what}: expected at least 1 shard, found {num_shards}")
    if count is not None and 0 < count < num_shards:
        raise ValueError(
            f"{what}: expected at most {count} shards for {count} examples, found {num_shards}"
        )


def _check_split_arrays(images: np.ndarray, labels: np.ndarray) -> None:
    """Validate a whole split once, so per-example encoding can skip the checks."""
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or images.shape[1:] != (IMAGE_HEIGHT, IMAGE_WIDTH)
    ):
        raise ValueError(
            f"expected uint8 images of shape (N, {IMAGE_HEIGHT}, {IMAGE_WIDTH}), "
            f"found {images.dtype} {images.shape}"
        )
    if labels.shape != (len(images),):
        raise ValueError(f"expected labels of shape ({len(images)},), found {labels.shape}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < NUM_CLASSES:
        raise ValueError(
            f"expected labels in 0..{NUM_CLASSES - 1}, found {labels.min()}..{labels.max()}"
        )


@dataclasses.dataclass(frozen=True)
class ValidationSplit:
    """Which examples of a training array are held out for validation."""

    indices: np.ndarray  # ascending positions in the array given to validation_split
    per_class_counts: tuple[int, ...]
    seed: int


def validation_size(count: int) -> int:
    """round(count / 12), halves rounded up (exact integer arithmetic)."""
    return (2 * count + VALIDATION_DENOMINATOR) // (2 * VALIDATION_DENOMINATOR)


def stratified_counts(class_sizes: np.ndarray, total: int) -> tuple[int, ...]:
    """Split ``total`` over the classes in proportion to their sizes, exactly.

    Largest-remainder (Hamilton) allocation: each class gets the floor of its
    quota ``n_c * total / n`` and the remaining units go to the largest
    fractional parts, ties to the lower label. Integer arithmetic, so the result
    never depends on float rounding; every class is within 1 of its quota.
    """
    sizes = [int(size) for size in class_sizes]
    count = sum(sizes)
    if not 0 <= total <= count:
        raise ValueError(f"cannot hold out {total} of {count} examples")
    if count == 0:
        return tuple(0 for _ in sizes)
    floors = [size * total // count for size in sizes]
    remainders = [size * total % count for size in sizes]
    spare = total - sum(floors)
    for label in sorted(range(len(sizes)), key=lambda c: (-remainders[c], c))[:spare]:
        floors[label] += 1
    return tuple(floors)


def validation_split(labels: np.ndarray, seed: int = VALIDATION_SEED) -> ValidationSplit:
    """Choose round(len(labels) / 12) examples, stratified by label, deterministically.

    Each class draws from its own generator ``default_rng([seed, label])``, so the
    choice within one class does not depend on how many examples the others have.
    """
    labels = np.asarray(labels)
    total = validation_size(len(labels))
    if total == 0:
        raise ValueError(
            f"{len(labels)} training examples leave no validation examples "
            f"(1/{VALIDATION_DENOMINATOR} rounds to 0); expected at least "
            f"{VALIDATION_DENOMINATOR // 2}"
        )
    counts = stratified_counts(np.bincount(labels, minlength=NUM_CLASSES), total)
    chosen = [
        np.random.default_rng([seed, label]).permutation(np.flatnonzero(labels == label))[:count]
        for label, count in enumerate(counts)
    ]
    indices = np.sort(np.concatenate(chosen)).astype(np.int64)
    return ValidationSplit(indices=indices, per_class_counts=counts, seed=seed)


def indices_sha256(indices: np.ndarray) -> str:
    """sha256 of the indices written as ASCII decimals joined by commas ("3,17,42")."""
    return hashlib.sha256(",".join(str(int(i)) for i in indices).encode("ascii")).hexdigest()


def hold_out_validation(
    images: np.ndarray, labels: np.ndarray, offset: int = 0, seed: int = VALIDATION_SEED
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """Cut a training array into (train, validation) and the manifest record of the cut.

    ``offset`` is the position of ``images[0]`` in the official training file (the
    START of ``ingest --slice``), so the recorded indices always name examples of
    that file. Both parts keep file order.
    """
    split = validation_split(labels, seed)
    held_out = np.zeros(len(labels), dtype=bool)
    held_out[split.indices] = True
    indices = split.indices + offset
    record = {
        "source": "official training file",
        "fraction": f"1/{VALIDATION_DENOMINATOR}",
        "seed": split.seed,
        "method": VALIDATION_METHOD,
        "count": len(indices),
        "per_class_counts": list(split.per_class_counts),
        "indices_sha256": indices_sha256(indices),
        "indices": [int(i) for i in indices],
    }
    train = (images[~held_out], labels[~held_out])
    validation = (images[held_out], labels[held_out])
    return train, validation, record


def write_split(
    images: np.ndarray, labels: np.ndarray, split_dir: Path | str, num_shards: int
) -> list[Path]:
    """Write one split as num_shards uncompressed TFRecord files of contiguous examples.

    Shards hold consecutive runs of examples, so reading them in name order
    gives back the original order. split_dir must hold no shards yet: mixing
    with an earlier run's shards would silently duplicate examples.
    """
    split_dir = Path(split_dir)
    _check_split_arrays(images, labels)
    _check_shard_count(num_shards, len(images), str(split_dir))
    split_dir.mkdir(parents=True, exist_ok=True)
    if any(split_dir.glob(f"*{SHARD_SUFFIX}")):
        raise FileExistsError(f"{split_dir}: already holds {SHARD_SUFFIX} files")

    pixel_rows = np.ascontiguousarray(images).reshape(len(images), IMAGE_BYTES)
    label_values = labels.tolist()  # one conversion, not a numpy scalar per example
    boundaries = [len(images) * shard // num_shards for shard in range(num_shards + 1)]
    paths: list[Path] = []
    for shard in range(num_shards):
        path = split_dir / shard_name(shard, num_shards)
        start, end = boundaries[shard], boundaries[shard + 1]
        with tf.io.TFRecordWriter(str(path)) as writer:
            for row, label in zip(pixel_rows[start:end], label_values[start:end], strict=True):
                writer.write(_example_from_bytes(row.tobytes(), label).SerializeToString())
        paths.append(path)
    logger.info("wrote %d examples to %d shard(s) in %s", len(images), num_shards, split_dir)
    return paths


def _manifest_content(
    info: DatasetInfo,
    counts: Mapping[str, int],
    shards: Mapping[str, list[Path]],
    root: Path,
    source_sha256: Mapping[str, str],
) -> dict[str, Any]:
    """The JSON manifest; shard paths are relative so the output can be moved."""
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "dataset": info.name,
        "class_names": list(info.class_names),
        "features": {IMAGE_KEY: IMAGE_ENCODING, LABEL_KEY: f"int64 0..{NUM_CLASSES - 1}"},
        "counts": dict(counts),
        "shards": {
            split: [path.relative_to(root).as_posix() for path in paths]
            for split, paths in shards.items()
        },
        "source_sha256": dict(source_sha256),
    }


def load_conversion(output_dir: Path | str) -> ConversionResult:
    """Read the manifest of a finished conversion; KeyError/ValueError/OSError if unusable."""
    output_dir = Path(output_dir)
    manifest = json.loads((output_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    if manifest["format_version"] != MANIFEST_FORMAT_VERSION:
        raise ValueError(
            f"{output_dir / MANIFEST_FILE}: expected format_version {MANIFEST_FORMAT_VERSION}, "
            f"found {manifest['format_version']}"
        )
    return ConversionResult(
        dataset=manifest["dataset"],
        output_dir=output_dir,
        counts={split: int(count) for split, count in manifest["counts"].items()},
        shards={
            split: tuple(output_dir / relative for relative in paths)
            for split, paths in manifest["shards"].items()
        },
        source_sha256=dict(manifest["source_sha256"]),
        reused=True,
        validation=dict(manifest.get("validation", {})),
    )


def _reusable_conversion(
    output_dir: Path,
    info: DatasetInfo,
    source_sha256: Mapping[str, str],
    shard_counts: Mapping[str, int],
) -> ConversionResult | None:
    """An existing conversion of exactly these sources with these shard counts, if any."""
    if not (output_dir / MANIFEST_FILE).is_file():
        return None
    try:
        existing = load_conversion(output_dir)
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring unreadable %s: %s", output_dir / MANIFEST_FILE, error)
        return None
    found_shard_counts = {split: len(paths) for split, paths in existing.shards.items()}
    if existing.dataset != info.name or existing.source_sha256 != dict(source_sha256):
        logger.info("%s holds a conversion of other sources; converting again", output_dir)
        return None
    if existing.validation.get("seed") != VALIDATION_SEED:
        logger.info(
            "%s holds a validation split drawn with seed %s, not %s; converting again",
            output_dir,
            existing.validation.get("seed"),
            VALIDATION_SEED,
        )
        return None
    if found_shard_counts != dict(shard_counts):
        logger.info(
            "%s has shards %s, %s requested; converting again",
            output_dir,
            found_shard_counts,
            dict(shard_counts),
        )
        return None
    missing = [path for paths in existing.shards.values() for path in paths if not path.is_file()]
    if missing:
        logger.warning(
            "%s lacks %d shard file(s), e.g. %s; converting again",
            output_dir,
            len(missing),
            missing[0],
        )
        return None
    return existing


LEGACY_SPLITS = ("eval",)


def _move_into_place(staging: Path, output_dir: Path) -> None:
    """Replace output_dir's splits and manifest with staging's, manifest last."""
    if not output_dir.exists():
        os.rename(staging, output_dir)
        return
    # Withdraw the old manifest first: until the new one lands, the directory
    # must not claim to hold a complete conversion.
    (output_dir / MANIFEST_FILE).unlink(missing_ok=True)
    # LEGACY_SPLITS: a format-1 conversion's "eval" directory must not outlive it.
    for split in (*SPLITS, *LEGACY_SPLITS):
        target = output_dir / split
        if target.exists():
            os.rename(target, staging / f"previous-{split}")  # removed with staging
        if (staging / split).exists():
            os.rename(staging / split, target)
    os.replace(staging / MANIFEST_FILE, output_dir / MANIFEST_FILE)


def write_conversion(
    arrays: Mapping[str, tuple[np.ndarray, np.ndarray]],
    output_dir: Path,
    info: DatasetInfo,
    source_sha256: Mapping[str, str],
    shard_counts: Mapping[str, int],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write the splits and the manifest (plus ``extra`` facts) into ``output_dir``,
    through a staging directory moved into place with the manifest last."""
    counts = {split: len(labels) for split, (_, labels) in arrays.items()}
    for split, count in counts.items():
        _check_shard_count(shard_counts[split], count, f"{split} split")

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 mode would stick to output_dir after the
    # rename and hide the records from other users (e.g. a serving container).
    staging = output_dir.parent / f".{output_dir.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        shards = {
            split: write_split(images, labels, staging / split, shard_counts[split])
            for split, (images, labels) in arrays.items()
        }
        manifest = _manifest_content(info, counts, shards, staging, source_sha256)
        manifest.update(extra or {})
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
        )
        _move_into_place(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "wrote %s (%s) into %s",
        info.name,
        ", ".join(f"{split}: {count}" for split, count in counts.items()),
        output_dir,
    )


def read_splits(
    files: Mapping[str, Path],
    info: DatasetInfo,
    train_slice: tuple[int, int] | None = None,
) -> tuple[dict[SplitName, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """The three splits' arrays from verified IDX files, and the manifest facts
    (``validation``, and ``train_slice`` when given) that say how they were cut.

    ``train_slice`` (START, END) keeps official training examples START..END-1
    before the validation part is held out of them; the test split is always the
    whole official test file.
    """
    official = {
        split: read_idx_pair(
            files[info.file_for(split, "images").stem], files[info.file_for(split, "labels").stem]
        )
        for split in ("train", "test")
    }
    images, labels = official["train"]
    extra: dict[str, Any] = {}
    start = 0
    if train_slice is not None:
        start, end = train_slice
        if end > len(labels):
            where = files[info.file_for("train", "labels").stem].parent
            raise ValueError(
                f"--slice {start}:{end}: the training set in {where} has {len(labels)} examples"
            )
        images, labels = images[start:end], labels[start:end]
        extra["train_slice"] = [start, end]
    try:
        train, validation, record = hold_out_validation(images, labels, offset=start)
    except ValueError as error:
        what = f"--slice {start}:{start + len(labels)}" if train_slice else "training set"
        raise ValueError(f"{what}: {error}") from None
    extra["validation"] = record
    return {"train": train, "validation": validation, "test": official["test"]}, extra


def convert_dataset(
    idx_dir: Path | str,
    output_dir: Path | str,
    dataset: DatasetInfo | str,
    train_shards: int = 4,
    validation_shards: int = 1,
    test_shards: int = 1,
) -> ConversionResult:
    """Verify the IDX files in idx_dir and write them as TFRecords under output_dir:
    ``train`` and ``validation`` (``hold_out_validation``) from the official training
    file, ``test`` from the official test file.

    Skips the work when output_dir already holds a conversion of the same
    source bytes with the same shard counts. Reading and verification happen
    before anything is written, so bad input leaves output_dir untouched.
    """
    started = time.perf_counter()
    info = dataset if isinstance(dataset, DatasetInfo) else get_dataset(dataset)
    idx_dir, output_dir = Path(idx_dir), Path(output_dir)
    shard_counts = {
        "train": train_shards,
        "validation": validation_shards,
        "test": test_shards,
    }
    for split, num_shards in shard_counts.items():
        _check_shard_count(num_shards, None, f"{split}_shards")

    files = find_idx_files(idx_dir, info)
    source_sha256 = verify_idx_files(files, info)
    existing = _reusable_conversion(output_dir, info, source_sha256, shard_counts)
    if existing is not None:
        logger.info("%s already holds this %s conversion; skipping", output_dir, info.name)
        return existing

    arrays, extra = read_splits(files, info)
    write_conversion(arrays, output_dir, info, source_sha256, shard_counts, extra)
    logger.info("converted %s in %.1f s", info.name, time.perf_counter() - started)
    return dataclasses.replace(load_conversion(output_dir), reused=False)
