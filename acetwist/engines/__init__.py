"""The engine pool: several AceStream engines (a static list or an orchestrator's), their health and load."""
