"""The BentoML service: an HTTP API service in front of a batching model service."""
