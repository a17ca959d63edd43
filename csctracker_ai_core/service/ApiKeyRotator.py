from csctracker_ai_core.compat import APIKeyRotator, ApiKeyRotator  # noqa: F401
