"""Shared builders of Kubernetes objects (``k8s_fixtures``) are imported from this directory."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
