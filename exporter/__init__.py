"""procsnap: a fast Linux process exporter for Prometheus and OpenTelemetry."""

from exporter.collector import Collector, Process, Snapshot, native_available, snapshot

__version__ = "0.1.0"
__all__ = ["Collector", "Process", "Snapshot", "native_available", "snapshot", "__version__"]
