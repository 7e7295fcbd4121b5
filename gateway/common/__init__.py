"""What all of Vamp shares (the control plane imports it too): HTTP API conventions, YAML text, units, names."""
