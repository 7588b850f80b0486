"""Benchmarks: each prints a table of ratios measured side by side in one run.

``make bench`` (or ``python -m bench``) runs them at full size; ``python -m bench --smoke`` runs
them tiny, as the test suite does so they cannot rot. Figures go into the README's table.
"""
