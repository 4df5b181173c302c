"""The Trio shell of cluster mode: many relay nodes sharing one Redis, each source's upstream
connection run by exactly one of them at a time (decisions in :mod:`relay.core.lease`)."""
