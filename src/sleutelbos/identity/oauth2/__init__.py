"""OAuth 2.0 and its extensions, one folder per specification (authlib's layout):

- ``rfc6749``: the framework — authorization endpoint, token endpoint grants (one file each);
- ``rfc7636``: PKCE, S256 only;
- ``rfc7662``: token introspection;
- ``rfc7009``: token revocation;
- ``rfc8414``: authorization server metadata (and OpenID Connect discovery, which shares its shape).
"""
