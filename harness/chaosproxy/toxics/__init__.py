"""The toxics, one per module; importing this package registers them all."""

from mailstorm.harness.chaosproxy.toxics import bandwidth, blackhole, latency, reset, slicer

__all__ = ["bandwidth", "blackhole", "latency", "reset", "slicer"]
