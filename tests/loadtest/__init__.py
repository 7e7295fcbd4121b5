"""The load tester's tests (`vamp loadtest`): plan, traffic, recorder, verdict, report and the CLI end to end."""
