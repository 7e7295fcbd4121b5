"""Demo services the quickstart deploys as local processes (`sava`)."""
