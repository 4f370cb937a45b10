"""Prices, token estimates, coin pools, reservations and the ledger."""
