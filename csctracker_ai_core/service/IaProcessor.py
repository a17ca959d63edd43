from csctracker_ai_core.processor import GeminiServiceException, IaProcessor  # noqa: F401
