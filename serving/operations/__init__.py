"""Use cases across the registry and the model store: an upload, `maas store gc`, the demo model."""
