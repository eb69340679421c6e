"""Dataset acquisition: fetching, verifying and safely extracting the ACDC archive."""
