"""Schema migrations (alembic). ``registry.db.make_engine`` upgrades a database to head on start."""
