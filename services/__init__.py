"""The processes of the ticketing service, one job each: intake, dispatch, sla_clock, relay."""
