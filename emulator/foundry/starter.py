"""Foundry's part of the commented starter seed that `emulator init` writes (it must pass
`check`): the top-level `tokens:` block and the `foundry:` block."""

STARTER_BLOCK = """\
# Ready-made bearer tokens: token -> {username (required), scopes, expires_in (seconds)}.
tokens:
  my-dev-token:
    username: jane
    scopes: [api:admin-read, api:ontologies-read, api:connectivity-connection-read]

foundry:
  # Principals. principal_type: human (default, shown on the sign-in page) or service.
  users:
    - username: jane                 # (required)
      display_name: Jane Smith
      given_name: Jane
      family_name: Smith
      email: jane@example.com
      attributes: {department: [Finance]}
      # id: a UUID (default: derived from the username, stable across restarts)
      # realm: palantir-internal-realm
      # organization_rid: ri.organization.main.organization.default
      # active: true

  # OAuth 2.0 clients. With none listed, any client_id is accepted (development mode).
  oauth_clients:
    - client_id: my-app              # (required)
      client_secret: my-app-secret   # leave out for a public client (PKCE required)
      name: My App
      redirect_uris: [http://localhost:3000/callback]
      grant_types: [authorization_code, refresh_token]   # and/or client_credentials
      allowed_scopes: [api:admin-read, api:ontologies-read, offline_access]  # empty = any

  oauth:
    access_token_ttl: 3600           # seconds
    code_ttl: 600                    # authorization codes
    # refresh_token_ttl: 86400       # default: until used (each use rotates it) or revoked

  enrollment:
    name: My Enrollment
    # rid: ri.enrollment..enrollment.default

  connections:
    - display_name: My REST API      # (required)
      parent_folder_rid: ri.compass.main.folder.my-folder   # (required)
      domains:
        - {host: api.example.com, port: 443, scheme: HTTPS}
      secrets: {API_KEY: change-me}  # values are kept but never returned

  ontologies:
    - api_name: my-ontology          # (required)
      display_name: My Ontology
      description: Queries to try
      queries:
        - api_name: hello            # one result for any parameters
          result: {greeting: hello}
        - api_name: lookup           # per-parameter cases, then the default result
          cases:
            - parameters: {id: a}
              result: {name: Alpha}
          result: null

  compute_modules:
    runtimes:
      - runtime_id: my-module        # (required)
        module_auth_token: my-module-token   # default: generated at start
        # on_restart: fail           # or requeue: what a module restart does to its jobs
    deployed_apps:
      - deployed_app_rid: ri.foundry.main.deployed-app.my-module   # (required)
        runtime_id: my-module        # (required; created if not listed above)
        branch: master
        display_name: My Module
    limits:
      poll_timeout: 20               # seconds a runtime's job poll is held before 204
      execute_timeout: 300           # seconds a synchronous execute waits for its result
      job_timeout: 600               # seconds a dispatched job may run without a result
      queue_depth: 1000              # waiting jobs per deployed app before 429
      retention_seconds: 900         # how long finished jobs and results are kept
      max_retained_jobs: 10000
"""
