"""bulletin: compose, check, preview and send email newsletters from a workspace folder."""

__version__ = "0.1.0.dev0"
