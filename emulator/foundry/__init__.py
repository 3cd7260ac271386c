"""The Foundry service: Multipass OAuth, admin, connectivity, ontologies and compute modules."""
