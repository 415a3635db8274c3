"""Evaluation protocols of the paper (PAPER-NOTES §3), each returning JSON-able results."""
