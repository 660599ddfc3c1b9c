"""HTTP routes only: thin handlers that parse, call one domain function and shape the response."""
