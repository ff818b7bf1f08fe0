"""rotator: keeps Mistral AI API keys fresh without breaking the services that use them."""

from __future__ import annotations

__version__ = "0.1.0"
