"""Everything that speaks SQL: the pool, migrations, ingest and queries."""
