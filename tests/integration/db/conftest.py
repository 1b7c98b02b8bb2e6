"""db/queue integration tests: make dbq_helpers importable."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
