"""The `sarcofed` console script: the one place that sits above common/, client/, server/,
simulations/ and deploy/ and gathers their user-facing commands."""

__version__ = "0.1.0"
