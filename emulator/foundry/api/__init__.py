"""Foundry HTTP routes: one blueprint per area, plus auth and error families."""
