"""Strict reader for the IDX files that MNIST and Fashion-MNIST ship as.

Here live the functions that turn an IDX images or labels file, raw or gzipped
(recognised by its magic bytes, whatever its name), into numpy arrays, after
checking everything the header promises: magic number, dtype code, rank,
28x28 geometry, exact byte count, image/label agreement and label range. Any
deviation raises IdxFormatError naming the file and what was expected versus
found. Plain numpy only: no TensorFlow, no hashing or downloading (that is
``ingest.fetch``) and no writing of IDX files.
"""

import gzip
import logging
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ingest.datasets import IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE_CODE = 0x08
IMAGES_RANK = 3
LABELS_RANK = 1
IMAGES_MAGIC = (UNSIGNED_BYTE_CODE << 8) | IMAGES_RANK  # 0x00000803
LABELS_MAGIC = (UNSIGNED_BYTE_CODE << 8) | LABELS_RANK  # 0x00000801

# Errors zlib/gzip raise on a damaged or cut-off stream; we report them as
# format errors so callers have one exception type for "this file is bad".
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


class IdxFormatError(ValueError):
    """An IDX file does not hold what its header or the dataset promises."""


def is_gzip(path: Path | str) -> bool:
    """True when the file starts with the gzip magic bytes (suffix is ignored)."""
    with open(path, "rb") as stream:
        return stream.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def open_uncompressed(path: Path | str) -> BinaryIO:
    """Open a raw or gzipped file for reading its uncompressed bytes."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _read_content(path: Path) -> bytearray:
    """Whole uncompressed content, in a mutable buffer so arrays are writable."""
    if not is_gzip(path):
        content = bytearray(path.stat().st_size)
        with open(path, "rb") as stream:
            stream.readinto(content)
        return content
    try:
        with gzip.open(path, "rb") as stream:
            return bytearray(stream.read())
    except _GZIP_ERRORS as error:
        raise IdxFormatError(f"{path}: not a valid gzip stream: {error}") from error


_MAGIC_BY_RANK = {IMAGES_RANK: IMAGES_MAGIC, LABELS_RANK: LABELS_MAGIC}
_KIND_BY_RANK = {IMAGES_RANK: "images", LABELS_RANK: "labels"}


def _parse_header(content: bytearray, path: Path, rank: int) -> tuple[int, ...]:
    """Check magic number and header length; return the dimension sizes."""
    expected_magic = _MAGIC_BY_RANK[rank]
    if len(content) < 4:
        raise IdxFormatError(
            f"{path}: too short for an IDX header: expected at least 4 bytes, found {len(content)}"
        )
    found_magic = struct.unpack_from(">I", content, 0)[0]
    if content[0] != 0 or content[1] != 0:
        raise IdxFormatError(
            f"{path}: bad magic number: expected 0x{expected_magic:08x} "
            f"({_KIND_BY_RANK[rank]}), found 0x{found_magic:08x}"
        )
    if content[2] != UNSIGNED_BYTE_CODE:
        raise IdxFormatError(
            f"{path}: wrong dtype code: expected 0x{UNSIGNED_BYTE_CODE:02x} (unsigned byte), "
            f"found 0x{content[2]:02x} (magic 0x{found_magic:08x})"
        )
    if content[3] != rank:
        raise IdxFormatError(
            f"{path}: wrong rank: expected {rank} (magic 0x{expected_magic:08x}, "
            f"{_KIND_BY_RANK[rank]}), found {content[3]} (magic 0x{found_magic:08x})"
        )
    header_size = 4 + 4 * rank
    if len(content) < header_size:
        raise IdxFormatError(
            f"{path}: truncated header: expected {header_size} bytes, found {len(content)}"
        )
    return struct.unpack_from(f">{rank}I", content, 4)


def _check_length(
    content: bytearray, path: Path, header_size: int, what: str, payload: int
) -> None:
    """Require exactly header + payload bytes; both shortfall and excess are errors."""
    expected = header_size + payload
    found = len(content)
    if found == expected:
        return
    problem = "truncated" if found < expected else f"{found - expected} trailing bytes"
    raise IdxFormatError(
        f"{path}: {problem}: header says {what} ({expected} bytes) but file has {found} bytes"
    )


def read_idx_images(path: Path | str) -> np.ndarray:
    """Read an IDX images file into a uint8 array of shape [N, 28, 28]."""
    path = Path(path)
    content = _read_content(path)
    count, rows, cols = _parse_header(content, path, IMAGES_RANK)
    if (rows, cols) != (IMAGE_HEIGHT, IMAGE_WIDTH):
        raise IdxFormatError(
            f"{path}: wrong image size: expected {IMAGE_HEIGHT}x{IMAGE_WIDTH}, found {rows}x{cols}"
        )
    header_size = 4 + 4 * IMAGES_RANK
    what = f"{count} images of {rows}x{cols}"
    _check_length(content, path, header_size, what, count * rows * cols)
    images = np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(count, rows, cols)
    logger.debug("read %d images from %s", count, path)
    return images


def read_idx_labels(path: Path | str) -> np.ndarray:
    """Read an IDX labels file into a uint8 array of shape [N], values in 0..9."""
    path = Path(path)
    content = _read_content(path)
    (count,) = _parse_header(content, path, LABELS_RANK)
    header_size = 4 + 4 * LABELS_RANK
    _check_length(content, path, header_size, f"{count} labels", count)
    labels = np.frombuffer(content, dtype=np.uint8, offset=header_size)
    out_of_range = np.flatnonzero(labels >= NUM_CLASSES)
    if out_of_range.size:
        first = int(out_of_range[0])
        raise IdxFormatError(
            f"{path}: label out of range: expected 0..{NUM_CLASSES - 1}, found {labels[first]} "
            f"at index {first} ({out_of_range.size} labels out of range)"
        )
    logger.debug("read %d labels from %s", count, path)
    return labels


def read_idx_pair(
    images_path: Path | str, labels_path: Path | str
) -> tuple[np.ndarray, np.ndarray]:
    """Read matching images and labels files; their counts must agree."""
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{images_path} and {labels_path}: count mismatch: expected as many labels as "
            f"images, found {len(images)} images and {len(labels)} labels"
        )
    return images, labels
