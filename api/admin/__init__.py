"""The admin REST API under /registry/v1 (a prefix no Hub route uses)."""
