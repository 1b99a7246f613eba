"""Helpers shared by hubgate's test suites (fixture content, a live server, client subprocesses)."""
