"""Load tests and their SLO reports (make loadtest, make soak)."""
