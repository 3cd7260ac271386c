"""The Fabric AI control plane (seed 002): organizations, API keys, jobs, workflows, providers."""
