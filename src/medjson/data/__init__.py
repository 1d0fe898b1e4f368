"""Question sources: reading files and hub datasets in each exam's layout, validating rows, and
carving the disjoint pools."""
