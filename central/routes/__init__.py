"""The registry's HTTP endpoints, one module per area; ``central.app`` mounts them."""
