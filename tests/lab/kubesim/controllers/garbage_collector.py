"""Garbage collector: objects whose owners are all gone, and foreground deletion."""
from ..cluster import SKEY
from .common import Controller


class GarbageCollector(Controller):
    name = "gc"

    def reconcile(self):
        store = self.c.store
        for skey, obj in store.all_objects():
            if True:
                meta = obj["metadata"]
                refs = meta.get("ownerReferences")
                if refs and all(store.by_uid(r.get("uid")) is None for r in refs):
                    store.remove(skey, meta.get("namespace", ""), meta["name"])
                    continue
                if meta.get("deletionTimestamp") and "foregroundDeletion" in (
                        meta.get("finalizers") or []):
                    deps = self.c.dependents(meta["uid"])
                    for d in deps:
                        dm = d["metadata"]
                        dskey = SKEY.get(d["kind"])
                        if dskey and not dm.get("deletionTimestamp"):
                            store.remove(dskey, dm.get("namespace", ""), dm["name"])
                    if not self.c.dependents(meta["uid"]):
                        def drop(o):
                            o["metadata"]["finalizers"] = [
                                f for f in o["metadata"]["finalizers"] if f != "foregroundDeletion"]
                        self.c.mutate(skey, meta.get("namespace", ""), meta["name"], drop)
