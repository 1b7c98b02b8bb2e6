"""Unit tests import the collection as ``ansible_collections.apex.ops`` (no services needed)."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = Path(os.environ.get("APEX_LAB_DIR", ROOT / ".lab")) / "collections"
_link = COLLECTIONS / "ansible_collections" / "apex" / "ops"
if not _link.exists():
    _link.parent.mkdir(parents=True, exist_ok=True)
    _link.symlink_to(ROOT)
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
