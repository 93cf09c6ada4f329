"""HTTP routes: thin handlers over the gateway services, one router file per resource."""
