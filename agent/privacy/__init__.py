"""Privacy: opting out by staff, erasure on request and after privacy.retention."""
