"""Use cases, one module each; every function owns its transaction."""
