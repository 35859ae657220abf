"""The report: text and figures from a finished run."""
