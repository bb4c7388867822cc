"""Dagster assets by layer: raw ingestion, dbt (staging and feature views), online views."""
