"""The fleet: devices reporting to one place over MQTT, and bundle rollouts to them."""
