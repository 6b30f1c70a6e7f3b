"""Pure-ASGI middleware (no body buffering), one per module; ``service.api.app`` installs them in order."""
