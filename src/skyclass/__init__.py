"""skyclass: from a folder of photos to a serverless image-classification API."""

# The one place the version is written: pyproject.toml reads it from here (setuptools' dynamic
# version), and the Lambda artifact, which carries this source without package metadata, too.
__version__ = "0.1.0"
