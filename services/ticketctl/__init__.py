"""ticketctl, the ops and audit command line (installed as a console script)."""
