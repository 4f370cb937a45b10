"""Migration scripts, one per schema change, applied in order by `lumen.store.migrate`."""
