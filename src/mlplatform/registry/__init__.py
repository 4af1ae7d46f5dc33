"""The model registry: versions, stages and aliases, lineage, audit history, artifacts."""
