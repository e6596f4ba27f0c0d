"""Core machinery of the benchmark: registries, configs, data, caches, results and tables."""
