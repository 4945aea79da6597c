"""I/O edges of the OpenEDS v2 precompute: raw files, Kaggle, parquet, the Hub.

The pure array work lives in :mod:`preprocessing`; everything here reads or writes
something and calls into it.
"""
