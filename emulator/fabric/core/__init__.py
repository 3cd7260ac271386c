"""Fabric's synchronous core: attrs records, state machines and stores. No trio, quart or yaml."""
