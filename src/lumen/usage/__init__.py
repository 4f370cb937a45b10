"""Usage records: what each request consumed, written behind the hot path in batches."""
