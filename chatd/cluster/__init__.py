"""The cluster: discovery, home shards, and the broker that carries traffic between shards."""
