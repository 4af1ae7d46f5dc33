"""Datasets: uploaded CSV and Parquet tables, profiled and kept in artifact storage."""
