"""The scenario's dead-letter list in the lab's Redis ($APEX_REDIS_HOST/PORT/PASSWORD), with redis-py.

    dead_letter.py push KEY JSON    LPUSH one dead letter (as the workers do)
    dead_letter.py read KEY         print the list as JSON, newest first
    dead_letter.py delete KEY...    delete the keys
"""
import json
import os
import sys

import redis

client = redis.Redis(host=os.environ["APEX_REDIS_HOST"], port=int(os.environ["APEX_REDIS_PORT"]),
                     password=os.environ.get("APEX_REDIS_PASSWORD") or None, decode_responses=True)
action, keys = sys.argv[1], sys.argv[2:]
if action == "push":
    client.lpush(keys[0], keys[1])
elif action == "read":
    print(json.dumps(client.lrange(keys[0], 0, -1)))
elif action == "delete":
    print(client.delete(*keys))
else:
    sys.exit("unknown action %r" % action)
