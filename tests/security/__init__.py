"""Attacks on the coordinator from a client written against fedft.proto alone."""
