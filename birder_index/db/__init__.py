"""The metadata store: schema (models.py), engines and sessions (engine.py), queries (queries.py)."""
