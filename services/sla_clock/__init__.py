"""The SLA clock service: raises SLA warnings and breaches at their due instants and
walks the escalation ladder, with every pending deadline kept in JetStream."""
