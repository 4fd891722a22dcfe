"""`python -m services.ticketctl`: the same as the `ticketctl` console script."""
from services.ticketctl.cli import app

app(prog_name="ticketctl")
