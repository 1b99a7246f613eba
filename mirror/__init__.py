"""Bytes: storage drivers, the content-addressed blob store, hashing, manifests, import."""
