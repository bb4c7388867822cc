"""Asset checks beyond the dbt tests (which dagster-dbt already turns into checks)."""
