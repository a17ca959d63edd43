from csctracker_ai_core.pool.rotator import ApiKeyRotator, APIKeyRotator  # noqa: F401
