"""The ConnectSoft runtime platform service: environments, deployments, configurations, secret
bindings, scaling policies, health, drift, OIDC tokens and the gRPC runtime queries."""
