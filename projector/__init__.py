"""The projector: follows the event log and keeps the read models in the read database current."""
