"""SPIFFE identities for trustmesh: IDs, X.509-SVIDs, trust bundles and mTLS contexts.

No sockets live here; only the rules for who is who and the TLS contexts that prove it.
"""

from ._errors import (
    IdentityError,
    InvalidSpiffeId,
    NotAnAppIdentity,
    PeerIdentityError,
    PeerIdentityMismatch,
    SvidError,
)
from ._mapping import (
    BINDING_KIND,
    IdentityBinding,
    IdentityMap,
    IdentityMapError,
    app_identity_of,
    current_identity_map,
    install_identity_map,
    parse_binding,
)
from ._peer import PeerSvid, leaf_app_identity, leaf_spiffe_uri, peer_identity, peer_svid
from ._pemfiles import atomic_write
from ._spiffe_id import (
    DEFAULT_NAMESPACE,
    DEFAULT_TRUST_DOMAIN,
    AppIdentity,
    SpiffeId,
    validate_app_id,
    validate_namespace,
    validate_trust_domain,
)
from ._svid import (
    TrustBundle,
    X509Svid,
    certificates_to_pem,
    load_pem_certificates,
    load_pem_private_key,
    load_svid_dir,
    private_key_to_pem,
    save_svid_dir,
    svid_dir_layout,
)
from ._tls import (
    client_context,
    expect_peer_identity,
    server_context,
    ssl_peer_identity,
    ssl_peer_svid,
)

__all__ = [
    "BINDING_KIND",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TRUST_DOMAIN",
    "AppIdentity",
    "IdentityBinding",
    "IdentityError",
    "IdentityMap",
    "IdentityMapError",
    "InvalidSpiffeId",
    "NotAnAppIdentity",
    "PeerIdentityError",
    "PeerIdentityMismatch",
    "PeerSvid",
    "SpiffeId",
    "SvidError",
    "TrustBundle",
    "X509Svid",
    "app_identity_of",
    "atomic_write",
    "certificates_to_pem",
    "client_context",
    "current_identity_map",
    "expect_peer_identity",
    "install_identity_map",
    "leaf_app_identity",
    "leaf_spiffe_uri",
    "load_pem_certificates",
    "load_pem_private_key",
    "load_svid_dir",
    "parse_binding",
    "peer_identity",
    "peer_svid",
    "private_key_to_pem",
    "save_svid_dir",
    "server_context",
    "ssl_peer_identity",
    "ssl_peer_svid",
    "svid_dir_layout",
    "validate_app_id",
    "validate_namespace",
    "validate_trust_domain",
]
