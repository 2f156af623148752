"""epochlab: how many epochs, which batch size, which learning rate."""

__version__ = "0.1.0"
