"""Preprocessing: intensity normalisation, in-plane resizing and clip extraction into a memory-mappable store."""
