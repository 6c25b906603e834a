"""histcli: predict gene expression from histone modification signals."""

__version__ = "0.1.0"
