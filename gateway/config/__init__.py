"""The gateway configuration: its model, loading and validating it (and back to text), the persisted state."""
