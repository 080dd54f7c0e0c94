"""The registry's processing pipeline: stages over a database work queue."""
