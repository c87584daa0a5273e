"""The fleet's centre: collector, store, status, report, harvest, and the bundle rollout."""
