"""The wire layer: framing, authentication and pickling.  Imports only ``_platform``."""
