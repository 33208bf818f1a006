"""The example users service: the seed's User model grown into a small HTTP API on Lambda."""
