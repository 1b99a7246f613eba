"""Metadata and decisions: DB tables, catalog queries, snapshots and refs. No HTTP, no file bytes."""
