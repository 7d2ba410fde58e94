"""XACML 3.0 PDP and AuthZForce-compatible PAP."""
