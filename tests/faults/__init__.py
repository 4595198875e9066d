"""The fault suite: real broker, real processes, real signals (docs/FAULTS.md)."""
