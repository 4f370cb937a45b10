"""Model backends: endpoints, balancing, health, the pooled HTTP client and local engines."""
