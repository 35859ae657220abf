"""The run record: run folder, hash-chained transcript, atomic writes."""
