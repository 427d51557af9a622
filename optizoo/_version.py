"""The installed optizoo version (a leaf: the plugin host and weight files import it)."""

__version__ = "0.1.0"
