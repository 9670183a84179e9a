//! SSH transport preferences shared by the client and the relay, so both ends of a burrow-to-burrow
//! link negotiate the same way.

use russh::{cipher, kex};

/// Ciphers offered, most preferred first: chacha20-poly1305 (fast everywhere, OpenSSH's default),
/// then AES-GCM (fastest where the CPU has AES instructions), then CTR modes for old peers.
pub const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_128_GCM,
    cipher::AES_256_GCM,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

/// Key exchanges the relay offers: hybrid ML-KEM and curve25519, what OpenSSH since 6.5 and
/// burrow itself negotiate, and NIST P-256/P-384 ECDH for clients that may not use curve25519
/// (FIPS policies). Not russh's finite-field Diffie-Hellman groups: they run on pure-Rust big
/// integers, where one 8192-bit exchange (group18, or a group exchange at the client's chosen
/// size) costs the relay about half a second of CPU. Any peer, before authenticating, could ask
/// for that again and again, and a session thread (`server::workers`) would run nothing else
/// meanwhile. sshd offered them by default until OpenSSH 10.0; a client that knows only them is
/// refused with "no matching key exchange method found". The two server extension names keep
/// RFC 8308 extension negotiation and strict key exchange (the Terrapin countermeasure) on.
pub const RELAY_KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::ECDH_SHA2_NISTP256,
    kex::ECDH_SHA2_NISTP384,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];
