"""The offline store: point-in-time training sets from the feature tables in PostgreSQL."""
