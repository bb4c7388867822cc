"""Raw ingestion: source files into the `raw` schema, by COPY, one partition at a time."""
