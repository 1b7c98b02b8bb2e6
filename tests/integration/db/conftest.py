"""db/queue integration tests: dbq_helpers importable (the lab's Redis client ``rds`` comes from
tests/integration/conftest.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
