"""The OpenAI-compatible HTTP API (`lf api`): `create_app(engine)` builds the FastAPI app."""
