// burrow: chacha20-poly1305@openssh.com with the bulk of each packet's keystream computed
// sixteen blocks at a time in AVX-512 registers (RustCrypto's `chacha20`, built with
// `--cfg chacha20_avx512`), where aws-lc's fastest x86_64 ChaCha20 is AVX2. On an AVX-512 CPU
// that keystream costs about half as much per byte (`openssl speed -evp chacha20` shows the
// same ceiling), which is the largest single cost of a bulk SSH transfer with this cipher.
// aws-lc still does the packet length, the Poly1305 key, the last partial batch of each
// packet and Poly1305 itself: for spans that short, one AVX-512 batch costs more to set up
// than it saves, and aws-lc's Poly1305 is faster than RustCrypto's. Chosen per key, at key
// exchange, only on CPUs with avx512f and avx512vl (`wide_keystream_available`).
//
// The construction is PROTOCOL.chacha20poly1305 (openssh-portable), as aws-lc-rs implements
// it: K_2 = key[..32] (payload and Poly1305 key), K_1 = key[32..] (length), nonce = the
// sequence number as a 64-bit big-endian integer, which is the IETF 96-bit nonce
// 0u32 || seq as u64 with a 32-bit block counter (a packet is far shorter than 2^32 blocks).

use aws_lc_rs::aead::chacha20_poly1305_openssh::{KEY_LEN, TAG_LEN};
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use zeroize::Zeroize;

use super::super::Error;
use super::PACKET_LENGTH_LEN;

const CHACHA_BLOCK: usize = 64;
/// One AVX-512 batch of the `chacha20` crate: 16 blocks. Shorter spans go to aws-lc.
const WIDE_SPAN: usize = 16 * CHACHA_BLOCK;

/// Whether this CPU runs `chacha20`'s AVX-512 backend. Without it that crate falls back to
/// code slower than aws-lc's, so then the wide path is not used at all.
pub(super) fn wide_keystream_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

struct Keys {
    /// K_2: the payload and the Poly1305 key.
    main: [u8; 32],
    /// K_1: the packet length.
    header: [u8; 32],
    /// Whether whole batches go through the AVX-512 keystream (false only in tests that
    /// compare both paths).
    wide: bool,
}

impl Keys {
    fn new(key_material: &[u8; KEY_LEN], wide: bool) -> Self {
        #[cfg(test)]
        WIDE_KEYS_MADE.with(|made| made.set(made.get() + usize::from(wide)));
        let mut keys = Keys {
            main: [0; 32],
            header: [0; 32],
            wide,
        };
        keys.main.copy_from_slice(&key_material[..32]);
        keys.header.copy_from_slice(&key_material[32..]);
        keys
    }

    /// The Poly1305 tag of `authenticated` under this packet's one-time key (block 0 of the
    /// main key's keystream), which is zeroed again after use.
    fn tag(&self, nonce: &[u8; 12], authenticated: &[u8]) -> [u8; TAG_LEN] {
        let mut poly_key = [0u8; 32];
        xor_keystream_aws_lc(&self.main, nonce, 0, &mut poly_key);
        let tag = poly1305(&poly_key, authenticated);
        poly_key.zeroize();
        tag
    }

    fn xor_payload(&self, nonce: &[u8; 12], payload: &mut [u8]) {
        let wide_len = if self.wide {
            payload.len() / WIDE_SPAN * WIDE_SPAN
        } else {
            0
        };
        let (wide, rest) = payload.split_at_mut(wide_len);
        if !wide.is_empty() {
            let mut cipher = chacha20::ChaCha20::new(&self.main.into(), &(*nonce).into());
            // Block 0 made the Poly1305 key; the payload starts at block 1.
            cipher.seek(CHACHA_BLOCK as u64);
            cipher.apply_keystream(wide);
        }
        // `read` refuses packets over MAXIMUM_PACKET_LEN (about 256 KiB, 4,100 blocks), so
        // the counter is far from wrapping.
        debug_assert!(wide_len / CHACHA_BLOCK < u32::MAX as usize);
        let counter = 1 + (wide_len / CHACHA_BLOCK) as u32;
        xor_keystream_aws_lc(&self.main, nonce, counter, rest);
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.main.zeroize();
        self.header.zeroize();
    }
}

#[cfg(test)]
thread_local! {
    /// Keys made with the wide path on this thread: lets a test see which keys the cipher
    /// chose without a way to look inside a `Box<dyn SealingKey>`.
    static WIDE_KEYS_MADE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn nonce(sequence_number: u32) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[8..].copy_from_slice(&sequence_number.to_be_bytes());
    nonce
}

fn xor_keystream_aws_lc(key: &[u8; 32], nonce: &[u8; 12], counter: u32, data: &mut [u8]) {
    if data.is_empty() {
        return;
    }
    let (pointer, len) = (data.as_mut_ptr(), data.len());
    // SAFETY: `out` and `in` are the same valid, writable buffer of `in_len` bytes (aws-lc
    // allows them to be equal); `key` points at 32 bytes and `nonce` at 12, as
    // CRYPTO_chacha_20 reads.
    unsafe {
        aws_lc_sys::CRYPTO_chacha_20(pointer, pointer, len, key.as_ptr(), nonce.as_ptr(), counter);
    }
}

/// aws-lc's Poly1305 state: 512 opaque bytes (aws-lc aligns its working part inside them;
/// aws-lc-rs aligns the whole to 64 bytes, and so do we).
#[repr(C, align(64))]
struct Poly1305State(aws_lc_sys::poly1305_state);

fn poly1305(key: &[u8; 32], message: &[u8]) -> [u8; TAG_LEN] {
    let mut state = Poly1305State([0; 512]);
    let mut tag = [0u8; TAG_LEN];
    // SAFETY: `state` is a zeroed, aligned poly1305_state that init sets up before update
    // and finish use it; `key` is the 32 bytes init reads, `message` is valid for its
    // length, and `tag` has the 16 bytes finish writes.
    unsafe {
        aws_lc_sys::CRYPTO_poly1305_init(&mut state.0, key.as_ptr());
        aws_lc_sys::CRYPTO_poly1305_update(&mut state.0, message.as_ptr(), message.len());
        aws_lc_sys::CRYPTO_poly1305_finish(&mut state.0, tag.as_mut_ptr());
    }
    // It held r and s, which are the one-time key.
    state.0.zeroize();
    tag
}

/// Compares two tags in time that does not depend on where they differ.
fn tags_equal(a: &[u8; TAG_LEN], b: &[u8]) -> bool {
    if b.len() != TAG_LEN {
        return false;
    }
    // SAFETY: both pointers are valid for TAG_LEN bytes (checked above for `b`).
    unsafe { aws_lc_sys::CRYPTO_memcmp(a.as_ptr().cast(), b.as_ptr().cast(), TAG_LEN) == 0 }
}

pub(super) struct OpeningKey(Keys);

pub(super) struct SealingKey(Keys);

impl OpeningKey {
    pub(super) fn new(key_material: &[u8; KEY_LEN], wide: bool) -> Self {
        OpeningKey(Keys::new(key_material, wide))
    }
}

impl super::OpeningKey for OpeningKey {
    fn decrypt_packet_length(
        &self,
        sequence_number: u32,
        encrypted_packet_length: &[u8],
    ) -> [u8; PACKET_LENGTH_LEN] {
        debug_assert_eq!(encrypted_packet_length.len(), PACKET_LENGTH_LEN);
        let mut length = [0u8; PACKET_LENGTH_LEN];
        for (plain, encrypted) in length.iter_mut().zip(encrypted_packet_length) {
            *plain = *encrypted;
        }
        xor_keystream_aws_lc(&self.0.header, &nonce(sequence_number), 0, &mut length);
        length
    }

    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    /// Authenticates `encrypted length || ciphertext || tag` first and only then decrypts
    /// the ciphertext in place, returning the plaintext after the length.
    fn open<'a>(
        &mut self,
        sequence_number: u32,
        ciphertext_and_tag: &'a mut [u8],
    ) -> Result<&'a [u8], Error> {
        if ciphertext_and_tag.len() < PACKET_LENGTH_LEN + TAG_LEN {
            return Err(Error::DecryptionError);
        }
        let ciphertext_len = ciphertext_and_tag.len() - TAG_LEN;
        let (ciphertext, tag) = ciphertext_and_tag.split_at_mut(ciphertext_len);
        let nonce = nonce(sequence_number);
        if !tags_equal(&self.0.tag(&nonce, ciphertext), tag) {
            return Err(Error::DecryptionError);
        }
        let payload = ciphertext
            .get_mut(PACKET_LENGTH_LEN..)
            .ok_or(Error::DecryptionError)?;
        self.0.xor_payload(&nonce, payload);
        Ok(payload)
    }
}

impl SealingKey {
    pub(super) fn new(key_material: &[u8; KEY_LEN], wide: bool) -> Self {
        SealingKey(Keys::new(key_material, wide))
    }
}

impl super::SealingKey for SealingKey {
    fn padding_length(&self, payload: &[u8]) -> usize {
        super::chacha20poly1305::padding_length(payload)
    }

    fn fill_padding(&self, padding_out: &mut [u8]) {
        super::chacha20poly1305::fill_padding(padding_out)
    }

    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    /// Encrypts `length || plaintext` in place and writes the tag over both.
    fn seal(&mut self, sequence_number: u32, packet: &mut [u8], tag_out: &mut [u8]) {
        let nonce = nonce(sequence_number);
        let (length, payload) = packet.split_at_mut(PACKET_LENGTH_LEN.min(packet.len()));
        xor_keystream_aws_lc(&self.0.header, &nonce, 0, length);
        self.0.xor_payload(&nonce, payload);
        let tag = self.0.tag(&nonce, packet);
        debug_assert_eq!(tag_out.len(), TAG_LEN);
        for (out, byte) in tag_out.iter_mut().zip(tag) {
            *out = byte;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use aws_lc_rs::aead::chacha20_poly1305_openssh as reference;

    use super::*;
    use crate::cipher::{
        OpeningKey as _, SealingKey as _, CHACHA20_POLY1305, CIPHERS, MAXIMUM_PACKET_LEN,
    };

    fn key_material(seed: u8) -> [u8; KEY_LEN] {
        let mut key = [0u8; KEY_LEN];
        for (i, b) in key.iter_mut().enumerate() {
            *b = seed
                .wrapping_mul(31)
                .wrapping_add((i as u8).wrapping_mul(7));
        }
        key
    }

    fn packet(len: usize) -> Vec<u8> {
        let mut packet: Vec<u8> = (0..PACKET_LENGTH_LEN + len)
            .map(|i| (i * 13 + 5) as u8)
            .collect();
        packet[..PACKET_LENGTH_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        packet
    }

    /// Lengths around every boundary the split uses: empty, shorter than a batch, whole
    /// batches, a batch plus a partial block, 32 and 128 KiB packets with SSH's framing,
    /// 256 KiB, and the largest packet `read` accepts (256 batches and a rest).
    const LENGTHS: &[usize] = &[
        MAXIMUM_PACKET_LEN - 1,
        MAXIMUM_PACKET_LEN,
        0,
        1,
        8,
        63,
        64,
        65,
        1016,
        1023,
        1024,
        1025,
        1088,
        2047,
        2048,
        4096 + 8,
        32768 + 28,
        131072 + 28,
        262_144,
    ];
    const SEQUENCE_NUMBERS: &[u32] = &[0, 1, 7, 0x0102_0304, u32::MAX];

    #[test]
    fn sealed_packets_equal_aws_lc_on_both_paths() {
        for (k, &seq) in SEQUENCE_NUMBERS.iter().enumerate() {
            let key = key_material(k as u8);
            let reference_key = reference::SealingKey::new(&key);
            for &len in LENGTHS {
                let mut expected = packet(len);
                let mut expected_tag = [0u8; TAG_LEN];
                reference_key.seal_in_place(seq, &mut expected, &mut expected_tag);
                for wide in [true, false] {
                    let mut sealed = packet(len);
                    let mut tag = [0u8; TAG_LEN];
                    SealingKey::new(&key, wide).seal(seq, &mut sealed, &mut tag);
                    assert!(
                        sealed == expected,
                        "ciphertext differs: len {len} seq {seq} wide {wide}"
                    );
                    assert_eq!(
                        tag, expected_tag,
                        "tag differs: len {len} seq {seq} wide {wide}"
                    );
                }
            }
        }
    }

    #[test]
    fn opens_what_aws_lc_sealed_and_refuses_any_changed_byte() {
        let key = key_material(9);
        let reference_key = reference::SealingKey::new(&key);
        for &seq in SEQUENCE_NUMBERS {
            for &len in LENGTHS {
                let mut sealed = packet(len);
                let mut tag = [0u8; TAG_LEN];
                reference_key.seal_in_place(seq, &mut sealed, &mut tag);
                sealed.extend_from_slice(&tag);
                for wide in [true, false] {
                    let mut opening = OpeningKey::new(&key, wide);
                    let length = opening.decrypt_packet_length(seq, &sealed[..PACKET_LENGTH_LEN]);
                    assert_eq!(u32::from_be_bytes(length) as usize, len);
                    let mut copy = sealed.clone();
                    let plaintext = opening.open(seq, &mut copy).unwrap();
                    assert!(
                        plaintext == &packet(len)[PACKET_LENGTH_LEN..],
                        "len {len} wide {wide}"
                    );
                    for flip in [0, PACKET_LENGTH_LEN, sealed.len() / 2, sealed.len() - 1] {
                        let mut tampered = sealed.clone();
                        tampered[flip] ^= 0x40;
                        let before = tampered.clone();
                        assert!(
                            opening.open(seq, &mut tampered).is_err(),
                            "byte {flip} of len {len}"
                        );
                        assert!(tampered == before, "decrypted before authenticating");
                    }
                    let mut copy = sealed.clone();
                    assert!(opening.open(seq.wrapping_add(1), &mut copy).is_err());
                    assert!(copy == sealed, "decrypted before authenticating");
                }
            }
        }
    }

    #[test]
    fn aws_lc_opens_what_the_wide_path_sealed() {
        let key = key_material(3);
        let reference_key = reference::OpeningKey::new(&key);
        for &len in LENGTHS {
            let mut sealed = packet(len);
            let mut tag = [0u8; TAG_LEN];
            SealingKey::new(&key, true).seal(42, &mut sealed, &mut tag);
            let plaintext = reference_key.open_in_place(42, &mut sealed, &tag).unwrap();
            assert!(plaintext == &packet(len)[PACKET_LENGTH_LEN..], "len {len}");
        }
    }

    /// The keys the negotiated cipher makes are the wide ones exactly where the CPU has
    /// AVX-512, and they work with aws-lc's at both ends.
    #[test]
    fn the_cipher_makes_wide_keys_on_avx512_cpus_and_they_interoperate() {
        let key = key_material(5);
        let cipher = CIPHERS.get(&CHACHA20_POLY1305).unwrap();
        let made_before = WIDE_KEYS_MADE.with(|made| made.get());
        let mut sealing = cipher.make_sealing_key(&key, &[], &[], &crate::mac::_NONE);
        let mut opening = cipher.make_opening_key(&key, &[], &[], &crate::mac::_NONE);
        let made = WIDE_KEYS_MADE.with(|made| made.get()) - made_before;
        assert_eq!(made, if wide_keystream_available() { 2 } else { 0 });

        let len = 32768 + 28;
        let mut sealed = packet(len);
        let mut tag = [0u8; TAG_LEN];
        sealing.seal(3, &mut sealed, &mut tag);
        let plaintext = reference::OpeningKey::new(&key)
            .open_in_place(3, &mut sealed.clone(), &tag)
            .map(<[u8]>::to_vec)
            .unwrap();
        assert!(plaintext == packet(len)[PACKET_LENGTH_LEN..]);

        let mut sealed = packet(len);
        reference::SealingKey::new(&key).seal_in_place(4, &mut sealed, &mut tag);
        sealed.extend_from_slice(&tag);
        assert!(opening.open(4, &mut sealed).unwrap() == &packet(len)[PACKET_LENGTH_LEN..]);
    }

    #[test]
    fn short_input_is_a_decryption_error_not_a_panic() {
        let mut opening = OpeningKey::new(&key_material(1), true);
        for len in 0..PACKET_LENGTH_LEN + TAG_LEN {
            let mut short = vec![0u8; len];
            assert!(opening.open(0, &mut short).is_err());
        }
    }
}
