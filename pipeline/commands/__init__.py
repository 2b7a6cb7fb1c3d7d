"""One module per ``pipeline`` sub-command group."""
