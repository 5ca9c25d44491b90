"""Drivers turn hardware into events and effects into hardware actions."""
