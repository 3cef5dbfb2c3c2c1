"""End-to-end checks on real containers and a real kubelet (``make image-check``, ``make e2e``)."""
