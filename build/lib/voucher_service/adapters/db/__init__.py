"""Database adapter: typed models, engine and session factory."""
