"""Comparison reports over a results directory: statistics, tables, plots, rendering."""
