"""RFC 6749, the OAuth 2.0 framework: the authorization endpoint (§3.1, §4.1.1) and the token endpoint's grants."""
