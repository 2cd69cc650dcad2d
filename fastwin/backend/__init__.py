"""Backend modules; see `fastwin.dispatch` for the interface each one implements."""
