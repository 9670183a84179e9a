//! SSH transport preferences shared by the client and the relay, so both ends of a burrow-to-burrow
//! link negotiate the same way.

use russh::cipher;

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
