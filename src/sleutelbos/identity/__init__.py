"""Identity manager: OAuth 2.0 / OpenID Connect, Keyrock-compatible."""
