"""The Hub-compatible read API: plain Starlette endpoints, because these are the hot paths."""
