"""What every service shares: settings, seeds, the state file, the clock, errors and the service
contract. Imports no service, no quart and no transport.
"""
