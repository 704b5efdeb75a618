"""What every orelane part shares: the command line, site configuration and the wire contract."""

__version__ = "0.1.0"
