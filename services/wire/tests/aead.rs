//! The sealing seam: both AES-128-GCM backends agree with the GCM specification's test vector
//! and with each other, byte for byte, on our packets.

use punktfunk_wire::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// McGrew & Viega, "The Galois/Counter Mode of Operation", test case 4 (AES-128, 96-bit IV,
/// 60-byte plaintext, 20-byte AAD).
#[test]
fn both_backends_match_the_gcm_spec_test_case_4() {
    let key: [u8; 16] = hex("feffe9928665731c6d6a8f9467308308")
        .try_into()
        .expect("16");
    let nonce: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().expect("12");
    let plain = hex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let cipher = hex(
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
         21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
    );
    let tag: [u8; 16] = hex("5bc94fbc3221a5db94fae95ae7121a47")
        .try_into()
        .expect("16");
    for backend in AeadBackend::ALL {
        let aead = backend.aes128_gcm(&key);
        let mut buf = plain.clone();
        let got = aead.seal_in_place(&nonce, &aad, &mut buf).expect("seal");
        assert_eq!(buf, cipher, "{} ciphertext", backend.name());
        assert_eq!(got, tag, "{} tag", backend.name());
        let mut out = vec![0u8; cipher.len()];
        aead.open(&nonce, &aad, &cipher, &tag, &mut out)
            .expect("open");
        assert_eq!(out, plain, "{} plaintext", backend.name());
        let mut bad_tag = tag;
        bad_tag[0] ^= 1;
        assert_eq!(
            aead.open(&nonce, &aad, &cipher, &bad_tag, &mut out),
            Err(AuthError),
            "{} accepted a wrong tag",
            backend.name()
        );
        let mut bad_aad = aad.clone();
        bad_aad[19] ^= 0x80;
        assert_eq!(
            aead.open(&nonce, &bad_aad, &cipher, &tag, &mut out),
            Err(AuthError),
            "{} accepted a modified AAD",
            backend.name()
        );
        let mut short = vec![0u8; cipher.len() - 1];
        assert_eq!(
            aead.open(&nonce, &aad, &cipher, &tag, &mut short),
            Err(AuthError),
            "{} accepted an output of the wrong length",
            backend.name()
        );
    }
}

/// A frame sealed by one backend is reassembled by a receiver on the other, in both
/// directions, and every packet is identical whichever backend sealed it.
#[test]
fn backends_interoperate_on_our_packets() {
    let key = SessionKey {
        key: *b"0123456789abcdef",
        salt: [9, 8, 7, 6],
    };
    let cfg = DataPlaneConfig::default();
    let au: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut batches = Vec::new();
    for backend in AeadBackend::ALL {
        let sealer = Sealer::with_backend(&key, StreamKind::Video, 40, backend);
        let mut tx = Packetizer::with_sealer(cfg, StreamKind::Video, sealer).expect("config");
        let mut batch = PacketBatch::new();
        tx.packetize(0, true, &au, &mut batch).expect("packetize");
        batches.push(batch.bytes().to_vec());
    }
    assert_eq!(
        batches[0], batches[1],
        "ring and aes-gcm sealed different bytes"
    );

    let stride = cfg.packet_len();
    for (sealed_by, bytes) in AeadBackend::ALL.iter().zip(&batches) {
        for opened_by in AeadBackend::ALL {
            let opener = Opener::with_backend(&key, StreamKind::Video, opened_by);
            let mut out = vec![0u8; cfg.shard_bytes as usize];
            for (i, pkt) in bytes.chunks_exact(stride).enumerate() {
                let (hdr, _) = PacketHeader::parse(pkt).expect("header");
                assert_eq!(hdr.seq, 40 + i as u64);
                opener.open(hdr.seq, pkt, &mut out).unwrap_or_else(|_| {
                    panic!(
                        "{} could not open {}'s packet {i}",
                        opened_by.name(),
                        sealed_by.name()
                    )
                });
            }
        }
    }
    let mut rx = Reassembler::new(cfg, &key, StreamKind::Video).expect("config");
    for pkt in batches[1].chunks_exact(stride) {
        rx.push(0, pkt).expect("push");
    }
    match rx.poll_event(0) {
        Some(Event::FrameComplete(f)) => assert_eq!(f.data, &au[..]),
        other => panic!("expected the frame, got {other:?}"),
    }
}
