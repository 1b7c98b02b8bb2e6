"""Hold one idle PostgreSQL session (connection from the PG* variables) with --application-name until the
server ends it (pg_terminate_backend) or --lifetime seconds pass; it sends nothing while it waits."""
import argparse
import select

import psycopg

parser = argparse.ArgumentParser()
parser.add_argument("--application-name", required=True)
parser.add_argument("--lifetime", type=float, required=True)
args = parser.parse_args()
with psycopg.connect(application_name=args.application_name, autocommit=True) as conn:
    # the socket becomes readable when the server terminates the session (its FATAL message, then EOF)
    select.select([conn.fileno()], [], [], args.lifetime)
