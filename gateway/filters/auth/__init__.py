"""Edge authentication: the route's "auth" filter slot and the checks it may hold.

filter.py   AuthFilter (fixed order: API key, JWT, webhook; 401 + WWW-Authenticate,
            counted and logged without secrets) and build_auth_filter(route config)
common.py   Failure (status, reason, message, challenge) and the Check signature
apikeys.py  ApiKeyCheck: header / query key, SHA-256 hashes, name + tier -> principal
jwt.py      JwtCheck: bearer tokens, claims, claim headers, verified-token cache
jws.py      JWK parsing and RS256 / ES256 / EdDSA / HS256 verification (cryptography)
jwks.py     JwksSource: a key set from a file, or a URL fetched, cached and refreshed
webhook.py  WebhookCheck: HMAC body signatures (GitHub / Stripe style)
"""

from gateway.filters.auth.common import Failure
from gateway.filters.auth.filter import AuthFilter, build_auth_filter

__all__ = ["AuthFilter", "Failure", "build_auth_filter"]
