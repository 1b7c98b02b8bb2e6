"""health_check integration tests: the db/queue helpers (private twin, dbq_helpers) importable
(the lab's Redis client ``rds`` comes from tests/integration/conftest.py)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "db"))
