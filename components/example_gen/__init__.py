"""ExampleGen over our TFRecords: TFX's FileBasedExampleGen with a checking executor."""
