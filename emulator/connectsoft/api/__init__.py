"""The ConnectSoft HTTP surface: REST routes, OIDC endpoints, control routes and gRPC routes."""
