"""Index stores behind one interface: SQLite (laptop) and PostgreSQL + pgvector (team)."""
