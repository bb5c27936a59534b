"""skyclass: from a folder of photos to a serverless image-classification API."""

__version__ = "0.1.0"
