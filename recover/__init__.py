"""recover: judge and repair a containerd 0.2.x state root after a crash."""
__version__ = "0.3.0"
