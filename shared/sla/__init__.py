"""SLA time: business calendars and the working-time arithmetic deadlines are computed with."""
