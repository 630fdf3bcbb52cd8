"""What the images of a split look like, in numbers TFDV can compare between runs.

The raw ``image`` feature is 784 opaque bytes, so StatisticsGen's statistics say
nothing about the pictures: MNIST digits and Fashion-MNIST clothes have the same
byte length, presence and uniqueness. A *data profile* summarises the pixels per
image instead:

- ``image_mean_intensity``: the image's mean pixel value, scaled to 0..1
  (MNIST about 0.13, Fashion-MNIST about 0.29);
- ``image_ink_fraction``: the share of its pixels above half intensity
  (MNIST about 0.10, Fashion-MNIST about 0.35);

each as an equal-width histogram over 0..1, plus the label counts. The Trainer
stores the profile of its training data with the model it exports
(``assets.extra/data_contract/``), and the ExampleValidator of a later run compares
that run's training data against the profile of the baseline model (the served
one), as TFDV statistics (``to_statistics``) with TFDV's own drift comparators.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

IMAGE_KEY = "image"
LABEL_KEY = "label"
NUM_CLASSES = 10
BUCKETS = 20
# The numeric per-image features a profile holds, as (name, what it is).
PROFILE_FEATURES = {
    "image_mean_intensity": "mean pixel value of the image, 0..1",
    "image_ink_fraction": "share of the image's pixels above half intensity",
}
# The data contract a model carries: inside its serving directory, the schema it was
# trained under and the profile of its training data.
CONTRACT_DIR = "assets.extra/data_contract"
SCHEMA_FILE = "schema.pbtxt"
PROFILE_FILE = "train_profile.json"
_READ_BATCH = 4096
# Default drift bounds (the ExampleValidator's, `mnist-tfx run --max-drift /
# --max-label-drift`). Measured with these profiles: MNIST test vs train 0.0007
# (both image features) and 0.004 (labels); Fashion-MNIST vs MNIST training images
# 0.42 (mean intensity) and 0.44 (ink fraction).
DEFAULT_MAX_DRIFT = 0.1
DEFAULT_MAX_LABEL_DRIFT = 0.1


@dataclass
class DataProfile:
    """Counts per label and a histogram per profile feature (``BUCKETS`` equal-width
    buckets over 0..1) of one split."""

    num_examples: int = 0
    label_counts: list[int] = field(default_factory=lambda: [0] * NUM_CLASSES)
    histograms: dict[str, list[int]] = field(
        default_factory=lambda: {name: [0] * BUCKETS for name in PROFILE_FEATURES}
    )
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PROFILE_FEATURES, 0.0))

    def add_images(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Add a batch: ``images`` uint8 [N, 784], ``labels`` int [N]."""
        pixels = images.astype(np.float32)
        values = {
            "image_mean_intensity": pixels.mean(axis=1) / 255.0,
            "image_ink_fraction": (images > 127).mean(axis=1),
        }
        for name, column in values.items():
            buckets = np.minimum((column * BUCKETS).astype(np.int64), BUCKETS - 1)
            counts = np.bincount(buckets, minlength=BUCKETS)
            self.histograms[name] = [
                a + int(b) for a, b in zip(self.histograms[name], counts, strict=True)
            ]
            self.sums[name] += float(column.sum())
        label_counts = np.bincount(labels.astype(np.int64), minlength=NUM_CLASSES)
        self.label_counts = [
            a + int(b) for a, b in zip(self.label_counts, label_counts, strict=True)
        ]
        self.num_examples += int(images.shape[0])

    def mean(self, name: str) -> float:
        return self.sums[name] / self.num_examples if self.num_examples else 0.0

    def to_json(self) -> str:
        return json.dumps(
            {
                "num_examples": self.num_examples,
                "label_counts": self.label_counts,
                "buckets": BUCKETS,
                "histograms": self.histograms,
                "sums": self.sums,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "profile") -> DataProfile:
        data = json.loads(text)
        if data.get("buckets") != BUCKETS or set(data.get("histograms", {})) != set(
            PROFILE_FEATURES
        ):
            raise ValueError(
                f"{source}: expected a data profile with {BUCKETS} buckets for "
                f"{sorted(PROFILE_FEATURES)}, found buckets={data.get('buckets')} "
                f"features={sorted(data.get('histograms', {}))}"
            )
        return cls(
            num_examples=int(data["num_examples"]),
            label_counts=[int(c) for c in data["label_counts"]],
            histograms={k: [int(c) for c in v] for k, v in data["histograms"].items()},
            sums={k: float(v) for k, v in data["sums"].items()},
        )


def profile_tfrecords(files: Sequence[str], compression: str = "GZIP") -> DataProfile:
    """The profile of every example in ``files`` (this project's image/label format)."""
    import tensorflow as tf

    spec = {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(serialized):
        features = tf.io.parse_example(serialized, spec)
        return tf.io.decode_raw(features[IMAGE_KEY], tf.uint8), features[LABEL_KEY]

    dataset = (
        tf.data.TFRecordDataset(list(files), compression_type=compression)
        .batch(_READ_BATCH)
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )
    profile = DataProfile()
    for images, labels in dataset.as_numpy_iterator():
        profile.add_images(images, labels)
    return profile


def to_statistics(profile: DataProfile, name: str = "train"):
    """The profile as TFDV statistics: one FLOAT feature per profile feature with
    its STANDARD histogram, and ``label`` as a categorical INT feature with its
    counts (rank histogram), which is what TFDV's drift comparators read."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats_list = statistics_pb2.DatasetFeatureStatisticsList()
    stats = stats_list.datasets.add(name=name, num_examples=profile.num_examples)
    for feature_name in PROFILE_FEATURES:
        feature = stats.features.add()
        feature.path.step.append(feature_name)
        feature.type = statistics_pb2.FeatureNameStatistics.FLOAT
        num = feature.num_stats
        num.common_stats.num_non_missing = profile.num_examples
        num.common_stats.min_num_values = 1
        num.common_stats.max_num_values = 1
        num.common_stats.avg_num_values = 1.0
        num.common_stats.tot_num_values = profile.num_examples
        num.mean = profile.mean(feature_name)
        histogram = num.histograms.add(type=statistics_pb2.Histogram.STANDARD)
        for index, count in enumerate(profile.histograms[feature_name]):
            histogram.buckets.add(
                low_value=index / BUCKETS, high_value=(index + 1) / BUCKETS, sample_count=count
            )
    label = stats.features.add()
    label.path.step.append(LABEL_KEY)
    label.type = statistics_pb2.FeatureNameStatistics.INT
    string_stats = label.string_stats
    string_stats.common_stats.num_non_missing = profile.num_examples
    string_stats.unique = sum(1 for count in profile.label_counts if count)
    ranked = sorted(enumerate(profile.label_counts), key=lambda item: -item[1])
    for rank, (value, count) in enumerate(ranked):
        string_stats.rank_histogram.buckets.add(
            low_rank=rank, high_rank=rank, label=str(value), sample_count=count
        )
    return stats_list


def drift_schema(max_js_divergence: float, max_label_linf: float):
    """A schema of the profile features carrying TFDV drift comparators: the
    Jensen-Shannon divergence bound on each per-image feature and the
    L-infinity bound on the label distribution."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    for feature_name in PROFILE_FEATURES:
        feature = schema.feature.add(name=feature_name, type=schema_pb2.FLOAT)
        feature.drift_comparator.jensen_shannon_divergence.threshold = max_js_divergence
    label = schema.feature.add(name=LABEL_KEY, type=schema_pb2.INT)
    label.int_domain.is_categorical = True
    label.drift_comparator.infinity_norm.threshold = max_label_linf
    return schema
