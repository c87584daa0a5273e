"""The fleet's centre (not on a device): the collector that stores what devices send, and the views
of it (status, report, harvest)."""
