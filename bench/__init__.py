"""Benchmarks: `python manage.py bench <scenario>` (see bench.scenarios). Never pass/fail tests."""
