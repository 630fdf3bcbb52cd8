"""Getting raw data in: dataset facts (``datasets``), the IDX reader (``idx``),
fetching and verifying the original files (``fetch``), conversion to TFRecords of
``tf.train.Example`` (``convert``) and immutable spans (``spans``).

Plain Python, numpy and TensorFlow I/O: nothing here imports TFX or another package
of this project (``make lint`` checks it).
"""
