"""TLS for the gateway: certificates read from PEM files (`certificates`), the server and upstream SSL contexts
(`contexts`), the choice of a certificate by SNI (`sni`) and the listener state that swaps in reloaded
certificates without restarting anything (`listener`). docs/tls.md is the user's description."""
