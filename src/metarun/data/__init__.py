"""Datasets: each reads (or generates) its data and samples episodes of tasks."""
