"""The lab's metrics exporter: what production's postgres_exporter, kube-state-metrics and the
kubelet's cAdvisor give Prometheus, read from the lab's PostgreSQL and the Kubernetes simulator
(docs/alerts.md). Test infrastructure, not shipped."""
