"""The PostgreSQL and Redis servers Skewless talks to: external when configured, else embedded."""

from skewless.services.lifecycle import Services, down, services, status

__all__ = ["Services", "down", "services", "status"]
