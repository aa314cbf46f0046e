"""riskstream: live risk scores from a recurrent model, one step per event."""

__version__ = "0.1.0"
