"""TFX's Pusher with an executor that publishes and verifies a version atomically."""
