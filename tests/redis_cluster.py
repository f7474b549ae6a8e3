"""The cluster starter moved to ``chaos/suite/redis_cluster.py`` (the chaos suite runs on
it too, and must not import ``tests``); re-exported here for ``tests/cluster/``."""

from chaos.suite.redis_cluster import NODE_TIMEOUT_MS, ClusterNode, RedisCluster, free_cluster_port

__all__ = ["NODE_TIMEOUT_MS", "ClusterNode", "RedisCluster", "free_cluster_port"]
