"""The recipe: pydantic sections, the stage list, loading, overrides and validation messages."""
