"""Showing what a run did: the terminal view while it trains and summaries after."""
