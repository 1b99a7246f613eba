"""The web catalog and approval desk, served by hubgate itself under ``/-/`` (see api/ui/app.py)."""

from api.ui.app import create_ui, install
from api.ui.render import PREFIX

__all__ = ["PREFIX", "create_ui", "install"]
