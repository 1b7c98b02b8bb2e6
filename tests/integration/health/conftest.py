"""health_check integration tests: the db/queue helpers (private twin, dbq_helpers) importable,
and a Redis client on the lab."""
import os
import sys

import pytest
import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "db"))


@pytest.fixture
def rds(lab):
    client = redis.Redis(host=lab["APEX_REDIS_HOST"], port=int(lab["APEX_REDIS_PORT"]),
                         password=lab["APEX_REDIS_PASSWORD"], decode_responses=True)
    yield client
    client.close()
