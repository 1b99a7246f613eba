"""HTTP and CLI: the composition root."""
