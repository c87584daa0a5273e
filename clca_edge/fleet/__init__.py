"""The fleet link, device side: the fleet file, topics, message schemas, the MQTT client, the uploader
and the uncertain-frame sampler. Torch-free; paho-mqtt is imported only when a link is made."""
