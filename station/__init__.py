"""The enrollment station firmware: workflow, outbox, identity, local store."""
