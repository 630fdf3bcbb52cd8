"""Tests of the IDX reader on the real-data fixture and on deliberately broken files."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ingest.idx import IdxFormatError, read_idx_images, read_idx_labels, read_idx_pair

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DATASETS = ("mnist", "fashion_mnist")
SPLIT_SIZES = {"train": 300, "t10k": 200}


def fixture_path(dataset: str, prefix: str, kind: str) -> Path:
    """Path of a gzipped fixture file, e.g. ('mnist', 'train', 'images')."""
    suffix = "images-idx3-ubyte" if kind == "images" else "labels-idx1-ubyte"
    return FIXTURES / dataset / f"{prefix}-{suffix}.gz"


def real_images(count: int) -> np.ndarray:
    """The first ``count`` real MNIST training images from the fixture."""
    return read_idx_images(fixture_path("mnist", "train", "images"))[:count]


def write(path: Path, content: bytes) -> Path:
    """Write bytes and return the path, for one-line bad-file construction."""
    path.write_bytes(content)
    return path


def images_header(count: int, rows: int = 28, cols: int = 28) -> bytes:
    """A well-formed images header (magic 0x00000803 and three dimensions)."""
    return bytes((0, 0, 0x08, 3)) + struct.pack(">3I", count, rows, cols)


def labels_header(count: int) -> bytes:
    """A well-formed labels header (magic 0x00000801 and one dimension)."""
    return bytes((0, 0, 0x08, 1)) + struct.pack(">I", count)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("prefix", sorted(SPLIT_SIZES))
def test_fixture_reads_with_expected_shapes_dtypes_and_balanced_labels(
    dataset: str, prefix: str
) -> None:
    images, labels = read_idx_pair(
        fixture_path(dataset, prefix, "images"), fixture_path(dataset, prefix, "labels")
    )
    count = SPLIT_SIZES[prefix]
    assert images.shape == (count, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (count,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [count // 10] * 10
    # Real digits/garments use the whole intensity range; a blank fixture would not.
    assert images.min() == 0 and images.max() == 255


def test_raw_and_gzip_give_identical_arrays_and_gzip_is_detected_by_content(tmp_path: Path) -> None:
    gz_path = fixture_path("mnist", "t10k", "images")
    raw = write(tmp_path / "t10k-images-idx3-ubyte", gzip.decompress(gz_path.read_bytes()))
    gz_without_suffix = write(tmp_path / "gzipped-but-no-suffix", gz_path.read_bytes())
    raw_with_gz_suffix = write(tmp_path / "raw-but-named.gz", raw.read_bytes())

    expected = read_idx_images(gz_path)
    for path in (raw, gz_without_suffix, raw_with_gz_suffix):
        np.testing.assert_array_equal(read_idx_images(path), expected)


def test_arrays_are_writable() -> None:
    images = read_idx_images(fixture_path("mnist", "t10k", "images"))
    images[0, 0, 0] = 1  # in-place preprocessing must not hit a read-only buffer


def test_bad_magic(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad-magic", b"\x12\x34\x08\x03" + struct.pack(">3I", 1, 28, 28) + bytes(784)
    )
    with pytest.raises(IdxFormatError) as error:
        read_idx_images(path)
    message = str(error.value)
    assert "bad-magic" in message and "bad magic number" in message
    assert "expected 0x00000803" in message and "found 0x12340803" in message


def test_html_page_instead_of_idx_is_bad_magic(tmp_path: Path) -> None:
    path = write(tmp_path / "train-labels-idx1-ubyte", b"<!DOCTYPE html><html>Not Found</html>")
    with pytest.raises(
        IdxFormatError, match=r"train-labels-idx1-ubyte: bad magic number: expected 0x00000801"
    ):
        read_idx_labels(path)


def test_wrong_dtype_code(tmp_path: Path) -> None:
    # 0x0D is the IDX code for float32.
    path = write(
        tmp_path / "float-images",
        b"\x00\x00\x0d\x03" + struct.pack(">3I", 1, 28, 28) + bytes(4 * 784),
    )
    with pytest.raises(IdxFormatError) as error:
        read_idx_images(path)
    message = str(error.value)
    assert "float-images" in message and "dtype" in message
    assert "expected 0x08" in message and "found 0x0d" in message


def test_wrong_rank_for_images(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rank2-images", b"\x00\x00\x08\x02" + struct.pack(">2I", 1, 784) + bytes(784)
    )
    with pytest.raises(IdxFormatError) as error:
        read_idx_images(path)
    message = str(error.value)
    assert "rank2-images" in message and "wrong rank" in message
    assert "expected 3" in message and "found 2" in message


def test_images_file_read_as_labels_is_wrong_rank(tmp_path: Path) -> None:
    images_path = fixture_path("mnist", "t10k", "images")
    with pytest.raises(IdxFormatError) as error:
        read_idx_labels(images_path)
    message = str(error.value)
    assert images_path.name in message
    assert "expected 1" in message and "found 3" in message and "0x00000801" in message


def test_wrong_image_dimensions(tmp_path: Path) -> None:
    path = write(tmp_path / "big-images", images_header(2, 32, 32) + bytes(2 * 32 * 32))
    with pytest.raises(IdxFormatError) as error:
        read_idx_images(path)
    message = str(error.value)
    assert "big-images" in message and "expected 28x28" in message and "found 32x32" in message


def test_truncated_images(tmp_path: Path) -> None:
    # Header promises 5 images, only 3 follow.
    path = write(tmp_path / "train-images-idx3-ubyte", images_header(5) + real_images(3).tobytes())
    with pytest.raises(IdxFormatError) as error:
        read_idx_images(path)
    message = str(error.value)
    assert message == (
        f"{path}: truncated: header says 5 images of 28x28 (3936 bytes) but file has 2368 bytes"
    )


def test_truncated_inside_gzip_is_reported_on_uncompressed_size(tmp_path: Path) -> None:
    content = images_header(5) + real_images(3).tobytes()
    path = write(tmp_path / "train-images-idx3-ubyte.gz", gzip.compress(content, mtime=0))
    with pytest.raises(IdxFormatError, match=r"truncated: .*3936 bytes\) but file has 2368 bytes"):
        read_idx_images(path)


def test_cut_gzip_stream(tmp_path: Path) -> None:
    whole = fixture_path("mnist", "t10k", "images").read_bytes()
    path = write(tmp_path / "cut.gz", whole[: len(whole) // 2])
    with pytest.raises(IdxFormatError, match=r"cut\.gz: not a valid gzip stream"):
        read_idx_images(path)


def test_truncated_header(tmp_path: Path) -> None:
    path = write(tmp_path / "short-header", images_header(5)[:10])
    with pytest.raises(
        IdxFormatError, match=r"short-header: truncated header: expected 16 bytes, found 10"
    ):
        read_idx_images(path)


def test_trailing_bytes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "padded-images", images_header(2) + real_images(2).tobytes() + b"\x00" * 7
    )
    with pytest.raises(IdxFormatError) as error:
        read_idx_images(path)
    message = str(error.value)
    assert "padded-images" in message and "7 trailing bytes" in message
    assert "2 images of 28x28 (1584 bytes)" in message and "file has 1591 bytes" in message


def test_truncated_labels(tmp_path: Path) -> None:
    path = write(tmp_path / "few-labels", labels_header(10) + bytes(range(6)))
    with pytest.raises(IdxFormatError) as error:
        read_idx_labels(path)
    message = str(error.value)
    assert (
        "few-labels" in message
        and "10 labels (18 bytes)" in message
        and "file has 14 bytes" in message
    )


def test_count_mismatch_between_images_and_labels(tmp_path: Path) -> None:
    images_path = write(tmp_path / "five-images", images_header(5) + real_images(5).tobytes())
    labels_path = write(tmp_path / "four-labels", labels_header(4) + bytes((1, 2, 3, 4)))
    with pytest.raises(IdxFormatError) as error:
        read_idx_pair(images_path, labels_path)
    message = str(error.value)
    assert "five-images" in message and "four-labels" in message
    assert "found 5 images and 4 labels" in message


def test_label_out_of_range_reports_first_bad_index_and_value(tmp_path: Path) -> None:
    path = write(tmp_path / "odd-labels", labels_header(6) + bytes((1, 2, 12, 3, 200, 9)))
    with pytest.raises(IdxFormatError) as error:
        read_idx_labels(path)
    message = str(error.value)
    assert "odd-labels" in message and "expected 0..9" in message
    assert "found 12 at index 2" in message and "2 labels out of range" in message


def test_error_type_is_a_value_error() -> None:
    assert issubclass(IdxFormatError, ValueError)
