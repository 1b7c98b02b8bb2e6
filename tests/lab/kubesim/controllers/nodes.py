"""Node cordon events (NodeNotSchedulable / NodeSchedulable), as the kubelet reports them."""
from .common import NODES, Controller


class NodeEvents(Controller):
    name = "nodes"

    def __init__(self, loop):
        super().__init__(loop)
        self.reported = set()  # (node uid, "cordoned") already reported

    def reconcile(self):
        for node in self.c.store.list(NODES):
            uid = node["metadata"]["uid"]
            cordoned = bool((node.get("spec") or {}).get("unschedulable"))
            key = (uid, "cordoned")
            if cordoned and key not in self.reported:
                self.reported.add(key)
                self.c.event(node, "NodeNotSchedulable", "Node %s status is now: "
                             "NodeNotSchedulable" % node["metadata"]["name"], component="kubelet")
            elif not cordoned and key in self.reported:
                self.reported.discard(key)
                self.c.event(node, "NodeSchedulable", "Node %s status is now: NodeSchedulable"
                             % node["metadata"]["name"], component="kubelet")
