"""phalanx's version (the bottom layer: the cluster code compares it across hosts)."""

__version__ = "0.1.0"  # also in pyproject.toml
