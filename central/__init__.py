"""The central registry: onboarding, ingest, pipeline, dedup, adjudication, issuance."""
