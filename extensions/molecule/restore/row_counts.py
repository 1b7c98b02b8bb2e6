"""Exact row counts of every user table of one database (connection from the PG* variables), as JSON
{"schema.table": rows} - the shape of a backup manifest's row_counts."""
import json
import sys

import psycopg
from psycopg import sql

TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""

with psycopg.connect(dbname=sys.argv[1]) as conn:
    counts = {}
    for schema, table in conn.execute(TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts["%s.%s" % (schema, table)] = conn.execute(query).fetchone()[0]
print(json.dumps(counts, sort_keys=True))
