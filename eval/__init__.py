"""Evaluation: metrics exactly as the datasets' published protocol defines them, and reports."""
