"""procsnap: a fast Linux process exporter for Prometheus and OpenTelemetry."""

from exporter.reader import native_available
from exporter.snapshots import Process, Snapshot, Snapshotter, snapshot

__version__ = "0.1.0"
__all__ = ["Process", "Snapshot", "Snapshotter", "native_available", "snapshot", "__version__"]
